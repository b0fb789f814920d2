// A fake OpenID Provider that the federation tests control, for what a
// well-behaved provider never does: forged, unsigned, expired or misdirected
// ID tokens, and key rotation. Node's own crypto, no dependencies.
//
//   node fake-op.mjs '{"client_id": "...", "client_secret": "..."}'
//
// Prints "listening <issuer>". The authorization endpoint signs in whoever
// the `login_hint` names (sub and email are the hint) and redirects straight
// back with a code. The token endpoint checks client authentication, the
// PKCE verifier and that the code is unused, then returns an ID token shaped
// by the current mode, set with POST /control {"mode": "...", "publish":
// ["k1", ...]}:
//   good | bad_signature | alg_none | wrong_iss | wrong_aud | expired |
//   nonce_mismatch | sign_with_k2 (a key published only once rotated in)
import http from "node:http";
import crypto from "node:crypto";

const settings = JSON.parse(process.argv[2] || "{}");
const clientId = settings.client_id || "cohort";
const clientSecret = settings.client_secret || "secret";

const keys = {
  k1: crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }),
  k2: crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }),
};
let published = ["k1"];
let mode = "good";
const codes = new Map();

const b64url = (buf) => Buffer.from(buf).toString("base64url");

function jwk(kid) {
  const pub = keys[kid].publicKey.export({ format: "jwk" });
  return { ...pub, kid, use: "sig", alg: "RS256" };
}

function sign(header, claims, kid) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = crypto.sign("RSA-SHA256", Buffer.from(input), keys[kid].privateKey);
  return `${input}.${b64url(sig)}`;
}

function idToken(issuer, grant) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer,
    sub: grant.login,
    aud: clientId,
    iat: now,
    exp: now + 300,
    nonce: grant.nonce,
    email: grant.login,
    email_verified: true,
  };
  let kid = "k1";
  switch (mode) {
    case "wrong_iss": claims.iss = "http://127.0.0.1:1/other"; break;
    case "wrong_aud": claims.aud = "someone-else"; break;
    case "expired": claims.iat = now - 7200; claims.exp = now - 3600; break;
    case "nonce_mismatch": claims.nonce = "not-the-nonce"; break;
    case "sign_with_k2": kid = "k2"; break;
  }
  if (mode === "alg_none") {
    return `${b64url(JSON.stringify({ alg: "none", typ: "JWT" }))}.${b64url(JSON.stringify(claims))}.`;
  }
  const token = sign({ alg: "RS256", typ: "JWT", kid }, claims, kid);
  if (mode === "bad_signature") {
    const [h, p, s] = token.split(".");
    const bytes = Buffer.from(s, "base64url");
    bytes[10] ^= 0xff;
    return `${h}.${p}.${b64url(bytes)}`;
  }
  return token;
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(typeof body === "string" ? body : JSON.stringify(body));
}

async function readBody(req) {
  let data = "";
  for await (const chunk of req) data += chunk;
  return data;
}

const server = http.createServer(async (req, res) => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname === "/.well-known/openid-configuration") {
      return send(res, 200, {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        response_types_supported: ["code"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["RS256"],
        token_endpoint_auth_methods_supported: ["client_secret_basic"],
        code_challenge_methods_supported: ["S256"],
      });
    }
    if (url.pathname === "/jwks") {
      return send(res, 200, { keys: published.map(jwk) });
    }
    if (url.pathname === "/authorize") {
      const q = url.searchParams;
      if (q.get("client_id") !== clientId || q.get("code_challenge_method") !== "S256") {
        return send(res, 400, { error: "invalid_request" });
      }
      const code = b64url(crypto.randomBytes(16));
      codes.set(code, {
        login: q.get("login_hint") || "someone@example.com",
        nonce: q.get("nonce"),
        challenge: q.get("code_challenge"),
        redirect: q.get("redirect_uri"),
        used: false,
      });
      const back = new URL(q.get("redirect_uri"));
      back.searchParams.set("code", code);
      back.searchParams.set("state", q.get("state"));
      res.writeHead(302, { location: back.toString() });
      return res.end();
    }
    if (url.pathname === "/token" && req.method === "POST") {
      const form = new URLSearchParams(await readBody(req));
      const auth = (req.headers.authorization || "").replace(/^Basic /, "");
      const [id, secret] = Buffer.from(auth, "base64").toString().split(":").map(decodeURIComponent);
      if (id !== clientId || secret !== clientSecret) {
        return send(res, 401, { error: "invalid_client" });
      }
      const grant = codes.get(form.get("code"));
      if (!grant || grant.used) {
        return send(res, 400, { error: "invalid_grant", error_description: "code unknown or already used" });
      }
      grant.used = true;
      const verifier = form.get("code_verifier") || "";
      const challenge = b64url(crypto.createHash("sha256").update(verifier).digest());
      if (challenge !== grant.challenge || form.get("redirect_uri") !== grant.redirect) {
        return send(res, 400, { error: "invalid_grant", error_description: "PKCE or redirect_uri mismatch" });
      }
      return send(res, 200, {
        access_token: b64url(crypto.randomBytes(16)),
        token_type: "Bearer",
        expires_in: 300,
        id_token: idToken(issuer, grant),
      });
    }
    if (url.pathname === "/control" && req.method === "POST") {
      const c = JSON.parse((await readBody(req)) || "{}");
      if (c.mode) mode = c.mode;
      if (c.publish) published = c.publish;
      return send(res, 200, { mode, published });
    }
    send(res, 404, { error: "not_found" });
  } catch (e) {
    send(res, 500, { error: String(e) });
  }
});

server.listen(0, "127.0.0.1", () => {
  console.log(`listening http://127.0.0.1:${server.address().port}`);
});
