// Three lanes (Jest projects), chosen by where a spec lives and how it is named:
//   unit         no servers; a spec here that starts one fails (EVENTBUS_TEST_LANE=unit, see the harness)
//   integration  *.integration.spec.ts and *.security.spec.ts: real nats-server and redis-server
//   slow         clusters, the sample, reliability and packaging folders, whatever their names
// `npm test` runs all three in one process; `npm run test:unit` (etc.) picks one with --selectProjects.
const SLOW_DIRS = ['scale-out', 'sample', 'reliability', 'packaging'];
const slowDirs = SLOW_DIRS.map((d) => `<rootDir>/test/${d}/`);
const SERVER_SPEC = ['\\.integration\\.spec\\.ts$', '\\.security\\.spec\\.ts$'];

const shared = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: { ignoreCodes: [151002] } }],
    // ES-module .js/.mjs (Nest 12 and its ESM-only dependencies) -> CommonJS; CommonJS files pass unchanged.
    '^.+\\.[cm]?js$': '<rootDir>/test/harness/esm-to-cjs.transform.js',
  },
  // Every file may be ESM; the transformer itself decides (nearest package.json "type", .mjs).
  transformIgnorePatterns: [],
};

/** @type {import('jest').Config} */
module.exports = {
  // Servers are started per test file; a slow machine needs room for restarts.
  testTimeout: 60_000,
  projects: [
    {
      ...shared,
      displayName: 'unit',
      testMatch: ['**/*.spec.ts'],
      testPathIgnorePatterns: ['/node_modules/', ...slowDirs, ...SERVER_SPEC],
      setupFiles: ['<rootDir>/test/harness/unit-lane.setup.js'],
    },
    {
      ...shared,
      displayName: 'integration',
      testMatch: ['**/*.integration.spec.ts', '**/*.security.spec.ts'],
      testPathIgnorePatterns: ['/node_modules/', ...slowDirs],
    },
    {
      ...shared,
      displayName: 'slow',
      testMatch: SLOW_DIRS.map((d) => `<rootDir>/test/${d}/**/*.spec.ts`),
    },
  ],
};
