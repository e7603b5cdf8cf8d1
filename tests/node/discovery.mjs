// Discovery as openid-client does it: the issuer in the document must be the one asked for.
// Result: the server metadata openid-client took in, and what it derives from it.
import { client, configure, main } from './lib.mjs'

await main(async () => {
  const config = await configure()
  const metadata = config.serverMetadata()
  return {
    metadata,
    supports_pkce_s256: metadata.supportsPKCE('S256'),
    supports_pkce_plain: metadata.supportsPKCE('plain'),
    client_id: config.clientMetadata().client_id,
    authorization_url: client.buildAuthorizationUrl(config, {
      redirect_uri: 'https://rp.example/callback',
      scope: 'openid',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
    }).href,
  }
})
