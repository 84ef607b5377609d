/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.spec.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: { ignoreCodes: [151002] } }],
    // ES-module .js/.mjs (Nest 12 and its ESM-only dependencies) -> CommonJS; CommonJS files pass unchanged.
    '^.+\\.[cm]?js$': '<rootDir>/test/harness/esm-to-cjs.transform.js',
  },
  // Every file may be ESM; the transformer itself decides (nearest package.json "type", .mjs).
  transformIgnorePatterns: [],
  // Servers are started per test file; a slow machine needs room for restarts.
  testTimeout: 60_000,
};
