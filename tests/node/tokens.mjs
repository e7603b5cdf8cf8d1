// What a relying party does with tokens afterwards, through openid-client: refresh (the new ID
// token validated again), userinfo, introspection, revocation, and what reuse of a rotated refresh
// token does.
//
// Environment: QR_OIDC_REFRESH_TOKEN, QR_OIDC_SUB (the ID token's sub).
// Result: the refreshed tokens; introspection and userinfo of the new access token before and
// after revoking it; how a replay of the old refresh token, and then the new one, are answered.
import { client, configure, describeError, env, main, tokenSummary } from './lib.mjs'

async function outcome(promise) {
  try {
    return { ok: await promise }
  } catch (err) {
    return describeError(err)
  }
}

await main(async () => {
  const config = await configure()
  const sub = env('QR_OIDC_SUB')
  const first = env('QR_OIDC_REFRESH_TOKEN')
  const refreshed = await client.refreshTokenGrant(config, first)
  const access = refreshed.access_token

  const introspectionBefore = await client.tokenIntrospection(config, access)
  const userinfoBefore = await client.fetchUserInfo(config, access, sub)
  await client.tokenRevocation(config, access, { token_type_hint: 'access_token' })
  const introspectionAfter = await client.tokenIntrospection(config, access)
  const userinfoAfter = await outcome(client.fetchUserInfo(config, access, sub))

  // reuse of the rotated-away refresh token, then the newest one of the same family
  const replay = await outcome(client.refreshTokenGrant(config, first))
  const newest = await outcome(client.refreshTokenGrant(config, refreshed.refresh_token))
  return {
    refreshed: tokenSummary(refreshed),
    introspection_before: introspectionBefore,
    userinfo_before: userinfoBefore,
    introspection_after: introspectionAfter,
    userinfo_after: userinfoAfter,
    replay,
    newest_after_replay: newest,
  }
})
