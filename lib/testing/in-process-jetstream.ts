// JetStream inside the in-process broker (to come): streams capturing subjects.
import type { InProcessBroker } from './in-process-broker';

const attached = new WeakMap<InProcessBroker, InProcessJetStream>();

export class InProcessJetStream {
  static of(broker: InProcessBroker): InProcessJetStream | undefined {
    return attached.get(broker);
  }

  static attach(broker: InProcessBroker): InProcessJetStream {
    let js = attached.get(broker);
    if (!js) attached.set(broker, (js = new InProcessJetStream()));
    return js;
  }

  captures(_subject: string): boolean {
    return false;
  }

  advance(_ms: number): void {}
}
