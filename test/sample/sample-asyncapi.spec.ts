// The sample's checked-in AsyncAPI documents (sample/<service>/asyncapi.json) are what the CLI
// makes from the current code, pass @asyncapi/parser, and give the request DTOs' shapes.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Parser } from '@asyncapi/parser';
import { getMetadataStorage } from 'class-validator';
import { EmailRequest, SlackRequest } from '../../sample/notifier/notification.requests';
import { GetEdgeStatus, ListEdges } from '../../sample/velocloud-bridge/edge.requests';

const ROOT = resolve(__dirname, '..', '..');
const SERVICES = ['velocloud-bridge', 'notifier', 'sites-monitor'] as const;
const documentOf = (service: string) => JSON.parse(readFileSync(join(ROOT, 'sample', service, 'asyncapi.json'), 'utf8'));

/** The payload schema of the channel at `address` (the first of anyOf; the second is the claim-check envelope). */
function payloadAt(doc: any, address: string): any {
  const channel: any = Object.values(doc.channels).find((c: any) => c.address === address);
  return (Object.values(channel.messages)[0] as any).payload.anyOf[0];
}

/** Every property a class-validator DTO decorates, and those not marked optional. */
function dtoFields(dto: new () => unknown): { properties: string[]; required: string[] } {
  const metas = getMetadataStorage().getTargetValidationMetadatas(dto, '', true, false);
  const properties = [...new Set(metas.map((m) => m.propertyName))];
  const optional = new Set(metas.filter((m) => m.name === 'isOptional').map((m) => m.propertyName));
  return { properties, required: properties.filter((p) => !optional.has(p)) };
}

it('`node sample/asyncapi.js --check`: the checked-in documents are current', () => {
  const res = spawnSync(process.execPath, [join('sample', 'asyncapi.js'), '--check'], { cwd: ROOT, encoding: 'utf8' });
  expect({ status: res.status, stderr: res.stderr }).toEqual({ status: 0, stderr: '' });
}, 300_000);

it.each(SERVICES)('%s: @asyncapi/parser finds no errors', async (service) => {
  const { diagnostics } = await new Parser().parse(readFileSync(join(ROOT, 'sample', service, 'asyncapi.json'), 'utf8'));
  expect(diagnostics.filter((d) => d.severity === 0)).toEqual([]);
});

it("the payload schemas are the request DTOs' (class-validator), with the receive and reply operations", () => {
  const bridge = documentOf('velocloud-bridge');
  const notifier = documentOf('notifier');
  const cases: Array<[any, string, new () => unknown]> = [
    [bridge, 'edge.list.request', ListEdges],
    [bridge, 'edge.status.request', GetEdgeStatus],
    [notifier, 'notification.slack.request', SlackRequest],
    [notifier, 'notification.email.request', EmailRequest],
  ];
  for (const [doc, address, dto] of cases) {
    const schema = payloadAt(doc, address);
    const { properties, required } = dtoFields(dto);
    expect({ address, title: schema.title, properties: Object.keys(schema.properties), required: schema.required }).toEqual({
      address,
      title: dto.name,
      properties,
      required,
    });
  }
  expect(payloadAt(notifier, 'notification.email.request').properties.to).toEqual({
    type: 'array',
    items: { type: 'string', format: 'email' },
    minItems: 1,
  });
  // The bridge replies (queue group velocloud-bridge); the notifier's durables do not.
  const bridgeOps = Object.values(bridge.operations) as any[];
  expect(bridgeOps.map((o) => [o.action, o.bindings?.nats?.queue, o.reply !== undefined])).toEqual([
    ['receive', 'velocloud-bridge', true],
    ['receive', 'velocloud-bridge', true],
  ]);
  const notifierOps = Object.values(notifier.operations) as any[];
  expect(notifierOps.map((o) => [o.action, o['x-eventbus-durable']?.name, o.reply])).toEqual([
    ['receive', 'notifier-slack', undefined],
    ['receive', 'notifier-email', undefined],
  ]);
  // The monitor only sends: two requests and two notifications.
  const monitorOps = Object.values(documentOf('sites-monitor').operations) as any[];
  expect(monitorOps.map((o) => [o.action, o.reply !== undefined])).toEqual([
    ['send', true],
    ['send', true],
    ['send', false],
    ['send', false],
  ]);
});
