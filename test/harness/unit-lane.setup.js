// The unit lane runs without servers: the harness refuses to start one, so a spec that needs a
// server and is not named *.integration.spec.ts fails at once instead of passing only where one is.
process.env.EVENTBUS_TEST_LANE = 'unit';
