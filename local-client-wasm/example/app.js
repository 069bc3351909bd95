// The example page: the flow of the command line, in a page. No inline script: the page's
// policy allows scripts from its own origin and WebAssembly only.
import init, { Client, stretchOnce } from "../pkg/local_client_wasm.js";

const $ = (id) => document.getElementById(id);
const out = (text) => { $("out").textContent = text; };
const fail = (e) => out(`${e.name}: ${e.code ?? ""} ${e.message}`);

let client = null;
let session = null;

async function connected() {
  if (!client) client = await Client.connect($("server").value);
  return client;
}

// A password is read at the call that needs it and the field emptied: the page keeps no copy.
function takePassword() {
  const p = $("password").value;
  $("password").value = "";
  return p;
}

const actions = {
  register: async () => {
    await (await connected()).register($("user").value, takePassword());
    return "registered";
  },
  login: async () => {
    session = await (await connected()).login($("user").value, takePassword());
    return `logged in as ${session.user}`;
  },
  logout: async () => { await session?.logout(); session = null; return "logged out"; },
  store: async () => {
    const v = await session.store($("name").value, new TextEncoder().encode($("secret").value), true);
    $("secret").value = "";
    return `stored version ${v}`;
  },
  retrieve: async () => new TextDecoder().decode(await session.retrieve($("name").value)),
  delete: async () => { await session.delete($("name").value); return "deleted"; },
  list: async () => JSON.stringify(await session.list(), null, 2),
  audit: async () => JSON.stringify(await session.audit(), null, 2),
};

await init();
// For scripts and tests driving the page.
window.keyserver = { Client, stretchOnce };
const params = new URLSearchParams(location.search);
if (params.get("server")) $("server").value = params.get("server");
for (const [id, f] of Object.entries(actions)) {
  $(id).addEventListener("click", () => f().then(out, fail));
}
$("status").textContent = "ready";
document.body.dataset.ready = "1";
