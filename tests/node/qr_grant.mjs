// The QR ticket grant with openid-client: the ticket is created at qr_ticket_endpoint (a plain
// fetch, as discovery names it), and the token endpoint is polled with openid-client's
// genericGrantRequest(grant_type urn:qr-oidc:params:oauth:grant-type:qr-ticket), which validates
// the ID token like any other (signature against jwks_uri, iss, aud, exp, iat, sub).
//
// Lines: {"event": "ticket", qr_content, user_code, expires_in, interval, binding_code?}, one
// "token_response" per poll, then the result (token response and claims) or the error
// (e.g. access_denied) as openid-client reported it.
//
// Public clients (no QR_OIDC_CLIENT_SECRET) send client_id and a PKCE S256 challenge made with
// openid-client's helpers, and the code_verifier with each poll.
// Extra environment: QR_OIDC_SCOPE, QR_OIDC_NONCE.
import {
  basicAuthorization, client, configure, emit, env, main, optionalEnv, sleep, tokenSummary,
} from './lib.mjs'

const QR_GRANT = 'urn:qr-oidc:params:oauth:grant-type:qr-ticket'

await main(async () => {
  const config = await configure()
  const metadata = config.serverMetadata()
  if (!metadata.grant_types_supported?.includes(QR_GRANT)) {
    throw new Error('discovery does not list the QR grant')
  }
  const clientId = env('QR_OIDC_CLIENT_ID')
  const secret = optionalEnv('QR_OIDC_CLIENT_SECRET')

  // (A) create a ticket
  const body = new URLSearchParams({ scope: env('QR_OIDC_SCOPE', 'openid profile') })
  const nonce = optionalEnv('QR_OIDC_NONCE')
  if (nonce) body.set('nonce', nonce)
  const headers = { accept: 'application/json' }
  let verifier
  if (secret) {
    headers.authorization = basicAuthorization(clientId, secret)
  } else {
    body.set('client_id', clientId)
    verifier = client.randomPKCECodeVerifier()
    body.set('code_challenge', await client.calculatePKCECodeChallenge(verifier))
    body.set('code_challenge_method', 'S256')
  }
  const created = await fetch(metadata.qr_ticket_endpoint, { method: 'POST', headers, body })
  if (created.status !== 201) {
    throw new Error(`qr_ticket_endpoint answered ${created.status}: ${await created.text()}`)
  }
  const ticket = await created.json()
  emit('ticket', {
    qr_content: ticket.qr_content,
    user_code: ticket.user_code,
    expires_in: ticket.expires_in,
    interval: ticket.interval,
    binding_code: ticket.binding_code ?? null,
  })

  // (C)-(E) poll the token endpoint until the phone decides
  const parameters = { ticket: ticket.ticket }
  if (verifier) parameters.code_verifier = verifier
  let interval = ticket.interval
  const deadline = Date.now() + ticket.expires_in * 1000
  for (;;) {
    await sleep(interval)
    try {
      const response = await client.genericGrantRequest(config, QR_GRANT, parameters)
      return tokenSummary(response)
    } catch (err) {
      if (!(err instanceof client.ResponseBodyError) || Date.now() > deadline) throw err
      if (err.error === 'slow_down') interval += 5
      else if (err.error !== 'authorization_pending') throw err
    }
  }
})
