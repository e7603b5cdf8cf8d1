// node-oidc-provider as the benchmark's same-run anchor (bench/README.md, "The anchor").
//
//   node server.js --port P --bench-port B [--issuer URL]
//
// One process, one Provider, node's own in-memory adapter (lib/adapters/memory_adapter.js, the
// class node uses by default; see STORE below for its capacity), the device flow enabled, one
// confidential client (client_secret_basic, device_code grant), one RS256 signing key. A
// redeemed device code answers an opaque access token and an RS256 ID token: node's defaults.
//
// P serves the provider and nothing else (its token endpoint is /token). B is a second, small
// HTTP server in the same process, for the benchmark only, on 127.0.0.1:
//
//   GET  /bench/ping                                   -> "ok"
//   POST /bench/device-codes?n=1000&state=pending      -> {"device_codes": [...]}
//   POST /bench/device-codes?n=1000&state=approved     -> {"device_codes": [...]}
//   GET  /bench/client                                 -> {"client_id": ..., "client_secret": ...}
//   POST /bench/forget                                 -> {"forgotten": N}
//   GET  /bench/stats                                  -> {"rss_mib": ..., "heap_used_mib": ...}
//
// /bench/forget drops every approved code made so far with what redeeming it stored (its grant,
// the access token), through the adapter's revokeByGrantId: each issuance round starts from the
// same store (the pending codes stay), as each of ours starts from a table of the same size.
//
// It writes DeviceCode records straight through the provider's models, as the device flow's
// interactive steps (user code entry, login, consent) would leave them: a pending code is what
// the device authorization endpoint saves; an approved one also carries accountId, authTime and
// the grantId of a saved Grant with the openid scope, as device.js saves after consent.
//
// Polling interval: node-oidc-provider 9 never answers slow_down (helpers/errors.js defines
// SlowDown, but no grant throws it; the device_code grant answers authorization_pending for as
// long as the code is pending), so every poll is on time however fast it comes, and nothing is
// needed here for that. The benchmark still polls 10^3 codes round robin, like its tickets.

import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

const port = Number(arg('port', '3000'));
const benchPort = Number(arg('bench-port', String(port + 1)));
const issuer = arg('issuer', `http://127.0.0.1:${port}`);

const CLIENT = {
  client_id: 'bench-device',
  client_secret: randomBytes(32).toString('base64url'),
  grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-rs256', alg: 'RS256', use: 'sig' };

// node's default in-memory adapter is this class over an LRU of 1000 entries (a pending device
// code takes two: the code and its user code index; an approved one four), which would evict the
// benchmark's 10^3 pending codes and the approved codes prepared for a round before they are
// redeemed. The same class over the same LRU, with room for every entry a run makes.
const STORE = new LRU({ maxSize: 5_000_000 });

const provider = new Provider(issuer, {
  adapter: (model) => new MemoryAdapter(model, STORE),
  clients: [CLIENT],
  jwks: { keys: [jwk] },
  features: {
    deviceFlow: { enabled: true },
    devInteractions: { enabled: false },
  },
  ttl: {
    DeviceCode: 7200, // no code expires during a run
    AccessToken: 3600,
    IdToken: 3600,
    Grant: 7200,
  },
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, name: 'Bench User', preferred_username: 'bench' }),
  }),
  cookies: { keys: [randomBytes(32).toString('base64url')] },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const ACCOUNT = 'bench-account';
let approvedGrants = [];

async function makeCode(state) {
  const code = new provider.DeviceCode({
    clientId: CLIENT.client_id,
    params: { client_id: CLIENT.client_id, scope: 'openid' },
    userCode: randomBytes(8).toString('hex').toUpperCase(),
    deviceInfo: { ip: '127.0.0.1', ua: 'qr-oidc-bench' },
  });
  if (state === 'approved') {
    const grant = new provider.Grant({ accountId: ACCOUNT, clientId: CLIENT.client_id });
    grant.addOIDCScope('openid');
    const grantId = await grant.save();
    approvedGrants.push(grantId);
    Object.assign(code, {
      accountId: ACCOUNT,
      authTime: Math.floor(Date.now() / 1000),
      amr: ['pwd'],
      grantId,
      scope: 'openid',
      sessionUid: randomUUID(),
    });
  }
  return code.save();
}

function send(res, status, body, type = 'application/json') {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}

const bench = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, `http://127.0.0.1:${benchPort}`);
    if (req.method === 'GET' && url.pathname === '/bench/ping') {
      send(res, 200, 'ok', 'text/plain');
    } else if (req.method === 'GET' && url.pathname === '/bench/client') {
      send(res, 200, { client_id: CLIENT.client_id, client_secret: CLIENT.client_secret });
    } else if (req.method === 'GET' && url.pathname === '/bench/stats') {
      const m = process.memoryUsage();
      send(res, 200, { rss_mib: m.rss / 1048576, heap_used_mib: m.heapUsed / 1048576 });
    } else if (req.method === 'POST' && url.pathname === '/bench/forget') {
      const grants = approvedGrants;
      approvedGrants = [];
      const adapter = provider.Grant.adapter;
      for (const grantId of grants) {
        // eslint-disable-next-line no-await-in-loop
        await provider.DeviceCode.adapter.revokeByGrantId(grantId);
        // eslint-disable-next-line no-await-in-loop
        await adapter.destroy(grantId);
      }
      send(res, 200, { forgotten: grants.length });
    } else if (req.method === 'POST' && url.pathname === '/bench/device-codes') {
      const n = Number(url.searchParams.get('n') || '1');
      const state = url.searchParams.get('state') || 'pending';
      if (!Number.isInteger(n) || n < 1 || n > 1_000_000 || !['pending', 'approved'].includes(state)) {
        send(res, 400, { error: 'n must be 1..10^6, state pending or approved' });
        return;
      }
      const codes = [];
      for (let i = 0; i < n; i += 1) {
        // eslint-disable-next-line no-await-in-loop
        codes.push(await makeCode(state));
      }
      send(res, 200, { device_codes: codes });
    } else {
      send(res, 404, { error: 'not_found' });
    }
  } catch (err) {
    console.error(err);
    send(res, 500, { error: String(err) });
  }
});

const server = provider.listen(port, '127.0.0.1');
bench.listen(benchPort, '127.0.0.1');
server.keepAliveTimeout = 5000;

function stop() {
  server.close();
  bench.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
