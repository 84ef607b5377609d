'use strict';
// How long an app on the testing module takes to start, answer 10 request/replies and close,
// from before compile() to after close(): the figure docs/testing.md quotes. No server needed.
//
//   npm run build && node bench/testing-module-start.js [--runs=20]
//
// Each run is a fresh child process, so module loading is paid once per child and the timed part
// is what one test file pays after Jest has loaded it. Prints the median, min and max wall time
// and the median CPU time (user + system) of the timed part.
const { fork } = require('node:child_process');
const path = require('node:path');

if (process.argv.includes('--child')) {
  require('reflect-metadata');
  const dist = path.resolve(__dirname, '..', 'dist');
  const { Injectable, Module } = require('@nestjs/common');
  const { Test } = require('@nestjs/testing');
  const { EventBus, EventBusModule, Subscribe } = require(dist);
  const { EventBusTestingModule } = require(path.join(dist, 'testing'));

  class Prices {
    price(n) {
      return n * 2;
    }
  }
  Injectable()(Prices);
  const d = Object.getOwnPropertyDescriptor(Prices.prototype, 'price');
  Subscribe('speed.price')(Prices.prototype, 'price', d);
  const Bus = EventBusModule.forRoot({ nats: { servers: 'nats://127.0.0.1:4222' } });
  class AppModule {}
  Module({ imports: [Bus], providers: [Prices] })(AppModule);

  (async () => {
    const cpu = process.cpuUsage();
    const started = performance.now();
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] })
      .overrideModule(Bus)
      .useModule(EventBusTestingModule.forRoot())
      .compile();
    const app = moduleRef.createNestApplication({ logger: false });
    await app.init();
    const bus = app.get(EventBus);
    for (let i = 0; i < 10; i++) if ((await bus.rpcRequest('speed.price', i)) !== i * 2) throw new Error('wrong reply');
    await app.close();
    const wallMs = performance.now() - started;
    const used = process.cpuUsage(cpu);
    process.send({ wallMs, cpuMs: (used.user + used.system) / 1000 }, () => process.exit(0));
  })().catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  const runsArg = process.argv.find((a) => a.startsWith('--runs='));
  const runs = runsArg ? Number(runsArg.slice(7)) : 20;
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  (async () => {
    const results = [];
    for (let i = 0; i < runs; i++) {
      results.push(
        await new Promise((resolve, reject) => {
          const child = fork(__filename, ['--child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
          child.once('message', resolve);
          child.once('exit', (code) => code !== 0 && reject(new Error(`run ${i} exited with ${code}`)));
        }),
      );
    }
    const wall = results.map((r) => r.wallMs);
    const cpu = results.map((r) => r.cpuMs);
    console.log(
      `testing module, start + 10 request/replies + close, ${runs} runs: median ${median(wall).toFixed(1)} ms ` +
        `(min ${Math.min(...wall).toFixed(1)}, max ${Math.max(...wall).toFixed(1)}), CPU median ${median(cpu).toFixed(1)} ms`,
    );
  })().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
