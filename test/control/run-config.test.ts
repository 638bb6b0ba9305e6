// `hostlb run`'s configuration, as pure function: what the one-liner stands
// for, that the file schema accepts it, and the errors that name the option.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { validateConfig } from '../../src/control/config-file.js';
import { defaultName, instanceBase, runConfig, type RunContext, type RunOptions } from '../../src/control/run-config.js';

const OPTIONS: RunOptions = {
  instances: 3, port: 3000, protocol: 'tcp', scheduler: 'lc', health: 'tcp', user: null, env: [], name: null,
  address: null, dataplane: 'auto', listenFds: false, stopTimeout: '10s', agent: null,
};
// nobody: a user every Debian host has.
const SOCKET: RunContext = { plane: 'socket', sudoUser: 'nobody', stateDir: '/run/hostlb/run-3000' };

test('run config: instances on 127.<port>.1 + i, the cluster on every local address, the invoking user, a schema-valid file', () => {
  assert.equal(instanceBase(3000), '127.11.184.1');
  assert.equal(instanceBase(80), '127.0.80.1');
  const raw = runConfig('python3', ['app.py', '--workers', '1'], OPTIONS, SOCKET);
  const config = validateConfig({ device: 'hlr3000', ...raw });
  const port = config.clusters[0].ports[0];
  assert.equal(config.clusters[0].address, '0.0.0.0');
  assert.equal(port.scheduler, 'lc');
  assert.deepEqual(
    { command: port.supervise?.command, args: port.supervise?.args, instances: port.supervise?.instances, host: port.supervise?.host, port: port.supervise?.port, listenFds: port.supervise?.listenFds },
    { command: 'python3', args: ['app.py', '--workers', '1'], instances: 3, host: '127.11.184.1', port: 3000, listenFds: false },
  );
  assert.equal(port.supervise?.env.HOSTLB_NAME, 'app.py', 'an interpreter\'s program names it');
  assert.equal(defaultName('/srv/bin/server', ['--port', '1']), 'server');
  assert.equal(defaultName('node', ['--enable-source-maps', 'dist/main.js']), 'main.js');
  assert.equal(port.advisor?.type, 'tcp');
});

test('run config: --health http:/path, --env, --name, --address, --listen-fds and --agent reach the file', () => {
  const raw = runConfig('/usr/bin/app', [], { ...OPTIONS, health: 'http:/healthz', env: ['MODE=prod', 'URL=a=b'], name: 'web', address: '127.0.0.1', listenFds: true, agent: 9999 }, { ...SOCKET, plane: 'netfilter' });
  const config = validateConfig({ device: 'hlr3000', ...raw });
  const port = config.clusters[0].ports[0];
  assert.equal(config.clusters[0].address, '127.0.0.1');
  assert.deepEqual(port.advisor?.type === 'http' ? port.advisor.path : null, '/healthz');
  assert.deepEqual(port.supervise?.env, { HOSTLB_NAME: 'web', MODE: 'prod', URL: 'a=b' });
  assert.equal(port.supervise?.listenFds, true);
  assert.deepEqual(port.agent, { port: 9999, stopGrace: 3 });
});

test('run config: each mistake names the option to change', () => {
  const fails = (options: Partial<RunOptions>, context: Partial<RunContext>, pattern: RegExp): void => {
    assert.throws(() => runConfig('app', [], { ...OPTIONS, ...options }, { ...SOCKET, ...context }), (e: Error) => pattern.test(e.message));
  };
  fails({}, { plane: 'tun' }, /^--address: this host runs the tun data plane, which serves one address/);
  fails({}, { sudoUser: undefined }, /^--user: the instances would run as root/);
  fails({ health: 'http' }, {}, /^--health: "http" is neither tcp nor http:\/path/);
  fails({ env: ['NOEQUALS'] }, {}, /^--env: "NOEQUALS" is not NAME=VALUE/);
  fails({ port: 70000 }, {}, /^--port: 70000 is not a port number/);
  fails({ instances: 0 }, {}, /^--instances: 0 is not a number of instances/);
  fails({ address: 'localhost' }, {}, /^--address: "localhost" is not an IP address/);
  fails({ scheduler: 'fastest' }, {}, /^--scheduler: "fastest" is not one of rr, wrr/);
  // Root when asked for by name.
  assert.equal((runConfig('app', [], { ...OPTIONS, user: 'root' }, { ...SOCKET, sudoUser: undefined }).clusters as Array<{ ports: Array<{ supervise: { user: string } }> }>)[0].ports[0].supervise.user, 'root');
});
