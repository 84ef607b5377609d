'use strict';
// A throwaway PostgreSQL for the outbox tests: initdb into a temporary directory, pg_ctl start on a
// free loopback port with trust authentication, stop/restart for fault tests, dispose removes it.
// EVENTBUS_TEST_POSTGRES_URL points the tests at an existing server instead (a fresh database each).
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { freePort } = require('../../scripts/local-servers');

const INSTALL = 'apt-get update && apt-get install -y postgresql-15';

/** The directory holding initdb and pg_ctl, or an Error that says how to install them. */
function postgresBinDir() {
  const candidates = [];
  if (process.env.PG_BINDIR) candidates.push(process.env.PG_BINDIR);
  const cfg = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (cfg.status === 0) candidates.push(cfg.stdout.trim());
  try {
    // Newest major first.
    const majors = fs.readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a));
    for (const m of majors) candidates.push(`/usr/lib/postgresql/${m}/bin`);
  } catch {
    /* none installed */
  }
  for (const dir of candidates) {
    if (['initdb', 'pg_ctl'].every((b) => fs.existsSync(path.join(dir, b)))) return dir;
  }
  throw new Error(
    `PostgreSQL's initdb and pg_ctl were not found (pg_config --bindir, /usr/lib/postgresql/*/bin). Install them with: ${INSTALL}`,
  );
}

/** initdb and postgres refuse to run as root: as root, run them as the `postgres` user. */
function asServerUser(bin, args) {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return [bin, args];
  return ['runuser', ['-u', 'postgres', '--', bin, ...args]];
}

function run(bin, args, what) {
  const [cmd, argv] = asServerUser(bin, args);
  const res = spawnSync(cmd, argv, { encoding: 'utf8', timeout: 60_000 });
  if (res.status !== 0) {
    throw new Error(`${what} failed (${cmd} ${argv.join(' ')}): ${res.error ? res.error.message : ''}${res.stdout}\n${res.stderr}`);
  }
  return res.stdout;
}

class PostgresServer {
  /** @param {{ port?: number }} [opts] */
  static async start(opts = {}) {
    if (process.env.EVENTBUS_TEST_LANE === 'unit') {
      throw new Error(
        'PostgreSQL started from the unit lane, which runs without servers: name the spec *.integration.spec.ts (see jest.config.js)',
      );
    }
    if (process.env.EVENTBUS_TEST_POSTGRES_URL) return ExistingPostgres.open(process.env.EVENTBUS_TEST_POSTGRES_URL);
    const server = new PostgresServer(opts.port || (await freePort()));
    await server.start();
    return server;
  }

  constructor(port) {
    this.port = port;
    this.bin = postgresBinDir();
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eventbus-pg-'));
    this.data = path.join(this.dir, 'data');
    if (typeof process.getuid === 'function' && process.getuid() === 0) {
      const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
      if (id.status !== 0)
        throw new Error(`running as root, PostgreSQL needs the "postgres" user to run as; install the server with: ${INSTALL}`);
      const uid = Number(id.stdout.trim());
      const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
      fs.chownSync(this.dir, uid, gid);
    }
    // Trust on loopback only.
    run(path.join(this.bin, 'initdb'), ['-D', this.data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync'], 'initdb');
    this.running = false;
  }

  get url() {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  async start() {
    if (this.running) return this;
    const opts = [
      `-p ${this.port}`,
      '-c listen_addresses=127.0.0.1',
      `-c unix_socket_directories=${this.data}`,
      // fsync off loses data only in a machine crash; synchronous_commit stays on, or an immediate
      // stop (the fault tests' crash) would lose transactions whose COMMIT already answered.
      '-c fsync=off',
      '-c full_page_writes=off',
      '-c max_connections=200',
    ].join(' ');
    run(
      path.join(this.bin, 'pg_ctl'),
      ['start', '-D', this.data, '-w', '-t', '60', '-l', path.join(this.data, 'server.log'), '-o', opts],
      'pg_ctl start',
    );
    this.running = true;
    return this;
  }

  /** Stop; `immediate` is a crash (no checkpoint, connections cut), `fast` a clean shutdown. */
  async stop(mode = 'fast') {
    if (!this.running) return;
    run(path.join(this.bin, 'pg_ctl'), ['stop', '-D', this.data, '-m', mode, '-w', '-t', '60'], 'pg_ctl stop');
    this.running = false;
  }

  async restart(mode = 'fast') {
    await this.stop(mode);
    return this.start();
  }

  /** The tail of the server's log, to explain a failure. */
  log() {
    try {
      return fs.readFileSync(path.join(this.data, 'server.log'), 'utf8').slice(-4000);
    } catch {
      return '';
    }
  }

  async dispose() {
    await this.stop('immediate').catch(() => undefined);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** EVENTBUS_TEST_POSTGRES_URL: a database of its own on a server someone else runs; no stop/restart. */
class ExistingPostgres {
  static async open(url) {
    const { Client } = require('pg');
    const name = `eventbus_test_${process.pid}_${Date.now().toString(36)}`;
    const admin = new Client({ connectionString: url });
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE ${name}`);
    } finally {
      await admin.end();
    }
    const u = new URL(url);
    u.pathname = `/${name}`;
    return new ExistingPostgres(url, u.toString(), name);
  }

  constructor(adminUrl, url, name) {
    this.adminUrl = adminUrl;
    this.url = url;
    this.name = name;
    this.running = true;
  }

  async stop() {
    throw new Error('EVENTBUS_TEST_POSTGRES_URL is set: the fault tests need a server the harness starts; unset it');
  }

  async start() {
    return this;
  }

  async restart() {
    return this.stop();
  }

  log() {
    return '';
  }

  async dispose() {
    const { Client } = require('pg');
    const admin = new Client({ connectionString: this.adminUrl });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${this.name} WITH (FORCE)`);
    } finally {
      await admin.end();
    }
  }
}

module.exports = { PostgresServer, postgresBinDir, POSTGRES_INSTALL_HINT: INSTALL };
