// The sample system's UI: users and their posts, every request through the gateway (this page's
// own origin). Each user action starts a W3C trace: the page sends a `traceparent` it made, the
// gateway continues it, and the page reports the action's span to /web/spans once it has its
// answer, so that `msctl trace last` starts at the click. Everything the services return is
// put in the page as text (textContent), never parsed as HTML.

const view = document.getElementById("view");
const banner = document.getElementById("banner");
let dashboard = null;

const hex = (bytes) =>
  Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");

/** An element with attributes and children; strings become text nodes, never markup. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function message(data, status) {
  return (data && data.error && data.error.message) || (status ? `HTTP ${status}` : "no answer from the gateway");
}

/**
 * One request to the gateway. `action` names what the user did; a traced request carries a
 * sampled traceparent and is reported as a span, an untraced one (polling) is not sampled.
 */
async function api(action, method, path, body, traced = true) {
  const traceId = hex(16);
  const traceparent = `00-${traceId}-${hex(8)}-${traced ? "01" : "00"}`;
  const start = Date.now();
  const t0 = performance.now();
  const headers = { traceparent };
  if (body !== undefined) headers["content-type"] = "application/json";
  let status = 0;
  let data = null;
  let answered = null;
  try {
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    status = r.status;
    answered = r.headers.get("traceparent");
    const text = await r.text();
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { error: { message: text } };
    }
  } catch (e) {
    data = { error: { message: `no answer from the gateway: ${e.message || e}` } };
  }
  if (traced) {
    const span = { name: action, traceparent, start_ms: start, duration_ms: performance.now() - t0, method, path, status };
    fetch("/web/spans", {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${hex(16)}-${hex(8)}-00` },
      body: JSON.stringify(span),
      keepalive: true,
    }).catch(() => {});
    showTrace(action, method, path, status, answered || traceparent, traceId);
  }
  return { status, data };
}

/** The footer: the last action, the traceparent of its answer, a link to its trace. */
function showTrace(action, method, path, status, traceparent, traceId) {
  document.getElementById("last-action").textContent = `${action}: ${method} ${path} → ${status || "no answer"}`;
  const code = document.getElementById("traceparent");
  code.textContent = `traceparent ${traceparent}`;
  document.getElementById("footer").dataset.traceId = traceId;
  const link = document.getElementById("trace-link");
  if (dashboard) {
    link.href = `${dashboard}/#traces/${traceId}`;
    link.hidden = false;
  }
}

function setBanner(text) {
  banner.textContent = text || "";
  banner.hidden = !text;
}

function postsOf(data) {
  if (Array.isArray(data)) return data;
  return data && Array.isArray(data.posts) ? data.posts : null;
}

async function usersView() {
  const { status, data } = await api("open users", "GET", "/users?limit=100");
  setBanner(null);
  view.replaceChildren(el("h1", {}, "Users"));
  if (status !== 200) {
    view.append(el("p", { class: "error", id: "load-error" }, message(data, status)));
  } else {
    const rows = data.users.map((u) =>
      el("tr", { "data-user": String(Number(u.id)) },
        el("td", {}, el("a", { href: `#/users/${Number(u.id)}` }, u.name)),
        el("td", {}, u.email)));
    view.append(el("table", { id: "users" },
      el("thead", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "email"))),
      el("tbody", {}, ...rows)));
  }
  const error = el("p", { class: "error", id: "user-error" });
  const form = el("form", { id: "new-user" },
    el("input", { name: "name", placeholder: "name", "aria-label": "name" }),
    el("input", { name: "email", placeholder: "email", "aria-label": "email" }),
    el("button", { type: "submit" }, "Create user"),
    error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const r = await api("create user", "POST", "/users", { name: f.get("name"), email: f.get("email") });
    if (r.status === 201) await usersView();
    else error.textContent = message(r.data, r.status);
  });
  view.append(el("h2", {}, "New user"), form);
}

function postList(posts) {
  const list = el("div", { id: "posts" });
  if (posts === null) {
    list.append(el("p", { class: "muted", id: "no-posts" }, "posts are unavailable right now"));
  } else if (posts.length === 0) {
    list.append(el("p", { class: "muted", id: "no-posts" }, "no posts"));
  } else {
    for (const p of posts) {
      list.append(el("article", { class: "post", "data-post": String(Number(p.id)) },
        el("h3", {}, p.title), el("p", {}, p.body)));
    }
  }
  return list;
}

async function userView(id) {
  const { status, data } = await api(`open user ${id}`, "GET", `/users/${id}/posts`);
  view.replaceChildren(el("p", {}, el("a", { href: "#/" }, "← all users")));
  if (status !== 200 || !data || !data.user) {
    setBanner(null);
    view.append(el("p", { class: "error", id: "load-error" }, message(data, status)));
    return;
  }
  if (data.partial) {
    const missing = (data.errors || []).map((e) => `${e.service}: ${e.message}`).join("; ");
    setBanner(`Part of this page is missing, the rest still works. ${missing}`);
  } else {
    setBanner(null);
  }
  const user = data.user;
  view.append(el("h1", { id: "user-name" }, user.name), el("p", { class: "muted", id: "user-email" }, user.email));
  const notice = el("p", { class: "notice", id: "notice", hidden: "" });
  const remove = el("button", { class: "danger", id: "delete-user", type: "button" }, "Delete user");
  view.append(remove, notice, el("h2", {}, "Posts"));
  let list = postList(postsOf(data.posts === undefined ? data : data.posts));
  view.append(list);

  const error = el("p", { class: "error", id: "post-error" });
  const form = el("form", { id: "new-post" },
    el("input", { name: "title", placeholder: "title", "aria-label": "title" }),
    el("textarea", { name: "body", placeholder: "what is it about?", "aria-label": "body" }),
    el("button", { type: "submit" }, "Create post"),
    error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const r = await api("create post", "POST", "/posts", { user_id: Number(id), title: f.get("title"), body: f.get("body") });
    if (r.status === 201) await userView(id);
    else error.textContent = message(r.data, r.status);
  });
  view.append(el("h2", {}, "New post"), form);

  remove.addEventListener("click", async () => {
    const r = await api(`delete user ${id}`, "DELETE", `/users/${id}`);
    if (r.status !== 204 && r.status !== 200) {
      notice.hidden = false;
      notice.textContent = `Not deleted: ${message(r.data, r.status)}`;
      return;
    }
    remove.remove();
    form.remove();
    notice.hidden = false;
    notice.textContent = "User deleted. Their posts go once posts applies the user.deleted event…";
    // Untraced polling: the delete's own trace stays the last one.
    const until = Date.now() + 60000;
    while (Date.now() < until) {
      const p = await api("check posts", "GET", `/posts?user_id=${id}&limit=100`, undefined, false);
      const posts = postsOf(p.data);
      if (posts) {
        const fresh = postList(posts);
        list.replaceWith(fresh);
        list = fresh;
        if (posts.length === 0) {
          notice.textContent = "User deleted, and their posts are gone: posts applied user.deleted.";
          notice.dataset.done = "true";
          return;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    notice.textContent = "User deleted; their posts are still there. Is the message bus running (msctl ps)?";
  });
}

async function route() {
  const m = location.hash.match(/^#\/users\/(\d+)$/);
  if (m) await userView(m[1]);
  else await usersView();
}

async function start() {
  try {
    const r = await fetch("/web/config", { headers: { traceparent: `00-${hex(16)}-${hex(8)}-00` } });
    if (r.ok) dashboard = (await r.json()).dashboard;
  } catch {
    // No dashboard link; the app works the same.
  }
  window.addEventListener("hashchange", route);
  await route();
  document.body.dataset.ready = "true";
}

start();
