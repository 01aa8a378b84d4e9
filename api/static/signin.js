// Sign-in for the scorecard page: OpenID Connect authorization code + PKCE (S256) with the IdP's
// public page client (api.auth.oidc.page_client_id). /api/v1/sign-in says whether the API wants it;
// without an IdP (local mode) nothing happens and requests go without credentials.
//
// The access and refresh tokens live in sessionStorage (this tab only), never in a cookie or the
// URL; the verifier and state live there only between the redirect to the IdP and the way back.
// An expired access token is renewed with the refresh_token grant (no page load); when the IdP
// refuses that (session ended, refresh token expired), the page signs in again.
"use strict";

(function (global) {
  const KEY = "carescore.signin";

  function b64url(bytes) {
    let text = "";
    for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
    return global.btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function random(n) {
    return b64url(global.crypto.getRandomValues(new Uint8Array(n)));
  }

  async function challengeOf(verifier) {
    const digest = await global.crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
    return b64url(digest);
  }

  function stored() {
    try {
      return JSON.parse(global.sessionStorage.getItem(KEY) || "{}");
    } catch (_) {
      return {};
    }
  }

  function store(value) {
    global.sessionStorage.setItem(KEY, JSON.stringify(value));
  }

  // Keep what the token endpoint answered; the access token is what requests carry.
  function save(tokens) {
    store({ token: tokens.access_token, refresh: tokens.refresh_token || null });
    return tokens.access_token;
  }

  async function tokenRequest(config, form) {
    return global.fetch(config.token_endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ client_id: config.client_id, ...form }).toString(),
    });
  }

  function redirectUri() {
    return global.location.origin + "/";
  }

  // Go to the IdP's login (the page is left): a new verifier, its S256 challenge, a state.
  async function begin(config) {
    const verifier = random(48);
    const state = random(24);
    store({ verifier, state });
    const query = new URLSearchParams({
      client_id: config.client_id,
      response_type: "code",
      scope: "openid",
      redirect_uri: redirectUri(),
      state,
      code_challenge: await challengeOf(verifier),
      code_challenge_method: "S256",
    });
    global.location.assign(`${config.authorization_endpoint}?${query}`);
  }

  // Back from the IdP (?code=&state=): exchange the code (with the verifier) for the access token.
  async function complete(config, url) {
    const params = new URL(url).searchParams;
    const pending = stored();
    if (params.get("error")) throw new Error(`sign-in refused: ${params.get("error")}`);
    if (!pending.verifier || params.get("state") !== pending.state) throw new Error("sign-in: unexpected state");
    const response = await tokenRequest(config, {
      grant_type: "authorization_code",
      code: params.get("code"),
      redirect_uri: redirectUri(),
      code_verifier: pending.verifier,
    });
    if (!response.ok) throw new Error(`sign-in: the IdP answered ${response.status}`);
    return save(await response.json());
  }

  // The page's start: the token to send (null in local mode). Signs in first when the API wants it.
  async function start() {
    const config = await (await global.fetch("/api/v1/sign-in")).json();
    if (config.mode !== "oidc") return null;
    const here = new URL(global.location.href);
    if (here.searchParams.has("code") || here.searchParams.has("error")) {
      const token = await complete(config, here.href);
      global.history.replaceState(null, "", "/"); // the code leaves the address bar and the history
      return token;
    }
    const token = stored().token;
    if (token) return token;
    await begin(config);
    return new Promise(() => {}); // the page is being left for the IdP
  }

  // The token was refused (expired): a new one from the refresh token, resolved without leaving the
  // page; else forget both and sign in again (the IdP's session makes it quick; the page is left).
  async function renew() {
    const config = await (await global.fetch("/api/v1/sign-in")).json();
    const { refresh } = stored();
    if (refresh) {
      const response = await tokenRequest(config, { grant_type: "refresh_token", refresh_token: refresh });
      if (response.ok) return save(await response.json());
    }
    store({});
    await begin(config);
    return new Promise(() => {}); // the page is being left for the IdP
  }

  global.carescoreSignIn = { begin, complete, start, renew, challengeOf };
})(typeof window !== "undefined" ? window : globalThis);
