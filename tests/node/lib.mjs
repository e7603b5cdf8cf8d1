// What every script here shares: configuration from the environment, an openid-client
// Configuration made by discovery, and the JSON-lines protocol the pytest side reads.
//
// Each script writes one JSON object per line on standard output. Intermediate lines tell the test
// what happened so far (e.g. {"event": "device_authorization", ...} so it can approve on the
// phone, or {"event": "token_response", "error": "slow_down"} for every token endpoint answer);
// the last line is {"event": "result", ...} or {"event": "error", ...}.
//
// Environment:
//   QR_OIDC_ISSUER          the issuer (http on loopback, so allowInsecureRequests)
//   QR_OIDC_CLIENT_ID       the client
//   QR_OIDC_CLIENT_SECRET   its secret (client_secret_basic); absent for a public client (none)
import * as client from 'openid-client'

export { client }

export function emit(event, body = {}) {
  process.stdout.write(JSON.stringify({ event, ...body }) + '\n')
}

export function env(name, fallback) {
  const value = process.env[name]
  if (value === undefined || value === '') {
    if (fallback !== undefined) return fallback
    throw new Error(`${name} is not set`)
  }
  return value
}

export function optionalEnv(name) {
  const value = process.env[name]
  return value === undefined || value === '' ? undefined : value
}

// Discovery, client authentication, signature checks of ID tokens, and a record of every answer
// of the token endpoint.
export async function configure() {
  const issuer = new URL(env('QR_OIDC_ISSUER'))
  const clientId = env('QR_OIDC_CLIENT_ID')
  const secret = optionalEnv('QR_OIDC_CLIENT_SECRET')
  const auth = secret ? client.ClientSecretBasic(secret) : client.None()
  const config = await client.discovery(issuer, clientId, undefined, auth, {
    execute: [client.allowInsecureRequests], // the test server is http on 127.0.0.1
  })
  // openid-client checks iss, aud, exp, iat and sub of every ID token itself; with this it also
  // verifies each ID token's signature against the keys at jwks_uri.
  client.enableNonRepudiationChecks(config)

  const tokenEndpoint = config.serverMetadata().token_endpoint
  config[client.customFetch] = async (url, options) => {
    const response = await fetch(url, options)
    if (String(url) === tokenEndpoint) {
      let error = null
      if (response.status !== 200) {
        error = await response.clone().json().then((body) => body.error ?? null, () => null)
      }
      emit('token_response', { status: response.status, error })
    }
    return response
  }
  return config
}

// RFC 6749 §2.3.1: client_id and secret are form-urlencoded before they are joined for Basic.
export function basicAuthorization(clientId, secret) {
  const encode = (value) => new URLSearchParams({ v: value }).toString().slice(2)
  return 'Basic ' + Buffer.from(`${encode(clientId)}:${encode(secret)}`).toString('base64')
}

// What a successful token response holds, with the ID token claims openid-client validated.
export function tokenSummary(response) {
  return {
    token_type: response.token_type,
    scope: response.scope,
    expires_in: response.expires_in,
    access_token: response.access_token,
    refresh_token: response.refresh_token ?? null,
    id_token: response.id_token ?? null,
    claims: response.claims() ?? null,
  }
}

export function describeError(err) {
  return {
    name: err?.name ?? null,
    code: err?.code ?? null,
    error: err?.error ?? null,
    error_description: err?.error_description ?? null,
    status: err?.status ?? null,
    message: String(err?.message ?? err),
    // a WWW-Authenticate challenge (e.g. userinfo refusing a token): its error parameter
    challenge_error: Array.isArray(err?.cause) ? (err.cause[0]?.parameters?.error ?? null) : null,
  }
}

// Run a script's body: its value is the "result" line, a thrown error the "error" line.
export async function main(body) {
  try {
    emit('result', await body())
  } catch (err) {
    emit('error', describeError(err))
    process.exitCode = 2
  }
}

export const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000))
