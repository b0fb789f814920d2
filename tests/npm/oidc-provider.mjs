// A real OpenID Provider for Cohort's federation tests: npm `oidc-provider`
// on a free loopback port, with its development login and consent forms.
//
//   node oidc-provider.mjs '<json>'
//
// where <json> is {"clients": [<oidc-provider client metadata>...],
// "accounts": {"<login>": {<claims>...}}}. Prints "listening <issuer>" once
// ready. Any login name is accepted by the development form; its claims are
// those configured for it (with `sub` set to the login), or just `sub`.
import Provider from "oidc-provider";

const settings = JSON.parse(process.argv[2] || "{}");
const accounts = settings.accounts || {};

async function start() {
  // Bind first to learn the port, since the issuer URL must contain it.
  const http = await import("node:http");
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: settings.clients || [],
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    cookies: { keys: ["cohort-test-cookie-key"] },
    claims: {
      openid: ["sub"],
      email: ["email", "email_verified"],
      profile: ["name", "given_name", "family_name", "preferred_username"],
      groups: ["groups"],
    },
    conformIdTokenClaims: false,
    findAccount: async (ctx, id) => ({
      accountId: id,
      claims: async () => ({ ...(accounts[id] || {}), sub: id }),
    }),
  });
  provider.proxy = false;
  server.on("request", provider.callback());
  console.log(`listening ${issuer}`);
}

start().catch((e) => {
  console.error(e);
  process.exit(1);
});
