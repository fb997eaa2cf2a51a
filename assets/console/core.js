// The console's shared parts: the words, elements, formatting, the API client, the session,
// forms, captchas, and tables. Safety rules kept throughout: text reaches the page only through
// textContent or attribute values (never innerHTML), the session token lives in this tab's
// sessionStorage and is sent only in the Authorization header of same-origin requests, and
// nothing runs from a string.

export const STRINGS = JSON.parse(document.getElementById("strings").textContent);
export const LANG = document.documentElement.lang || "en";
export const LOCALE = LANG === "zh" ? "zh-CN" : "en";
export const PAGE = document.body.dataset.page;
export const ACCESS = document.body.dataset.access;
export const TOKEN_KEY = "meterapi.session";
export const PAGE_SIZE = 20;

export const t = (key) => STRINGS[key] ?? key;
export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
export const slot = (name) => $(`[data-slot="${name}"]`);
export const formNamed = (name) => $(`form[data-form="${name}"]`);
export const params = new URLSearchParams(location.search);

// ---- elements -------------------------------------------------------------------------

/** An element with attributes, properties and children; strings become text nodes. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const button = (label, onclick, className) =>
  el("button", { type: "button", class: className, onclick }, label);

export function notice(text, kind = "ok") {
  const box = $("[data-notice]");
  box.textContent = text;
  box.className = `notice ${kind}`;
  box.hidden = !text;
  if (text) box.scrollIntoView({ block: "nearest" });
}

// ---- formatting ---------------------------------------------------------------------------

export const number = (value) =>
  value === null || value === undefined ? "—" : Number(value).toLocaleString(LOCALE);
export const when = (value) => (value ? new Date(value).toLocaleString(LOCALE) : "—");
export const day = (value) => (value ? new Date(value).toLocaleDateString(LOCALE) : "—");

/** Minor units in the currency's own number of decimals (two for USD, none for JPY). */
export function money(cents, currency) {
  if (cents === null || cents === undefined) return "—";
  try {
    const format = new Intl.NumberFormat(LOCALE, {
      style: "currency",
      currency: (currency || "usd").toUpperCase(),
    });
    const digits = format.resolvedOptions().maximumFractionDigits;
    return format.format(cents / 10 ** digits);
  } catch {
    return `${cents} ${currency}`;
  }
}

/** A stored status word in the reader's language, when the strings know it. */
export const word = (value) => (value in STRINGS ? STRINGS[value] : value);

// ---- the API ----------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(body, status, retryAfter) {
    super(body && body.msg ? body.msg : t("unexpected_error"));
    this.status = status;
    this.code = body ? body.code : status;
    this.subCode = body ? body.sub_code : undefined;
    this.requestId = body ? body.request_id : undefined;
    this.retryAfter = retryAfter ? Number(retryAfter) : undefined;
  }
}

export const token = () => sessionStorage.getItem(TOKEN_KEY);

/** One call of /myapi: the envelope's data, or an ApiError carrying its codes. */
export async function api(method, path, body, extraHeaders = {}) {
  const headers = { "X-Lang": LANG, ...extraHeaders };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError({ msg: t("network_error") }, 0);
  }
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    envelope = null;
  }
  if (!response.ok || !envelope || envelope.code !== 200) {
    const error = new ApiError(envelope, response.status, response.headers.get("Retry-After"));
    // 40101: the session is gone (expired, revoked, signed out elsewhere).
    if (error.subCode === 40101 && ACCESS !== "public") signIn();
    throw error;
  }
  return envelope.data;
}

export const query = (values) => {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
};

export function errorText(error) {
  let text = error.message;
  if (error.subCode) text += ` (${error.subCode})`;
  if (error.retryAfter) text += ` ${t("retry_after").replace("{s}", error.retryAfter)}`;
  return text;
}

export function showError(box, error) {
  if (!box) return notice(errorText(error), "bad");
  box.textContent = errorText(error);
  box.hidden = false;
}

/** Runs `action`, showing its failure in the page's error line. */
export async function attempt(action, box = $("[data-page-error]")) {
  try {
    if (box) box.textContent = "";
    return await action();
  } catch (error) {
    showError(box, error);
    return undefined;
  }
}

// ---- session --------------------------------------------------------------------------

export function signIn() {
  sessionStorage.removeItem(TOKEN_KEY);
  location.replace(`/login${query({ next: location.pathname + location.search })}`);
}

export function signedIn(newToken) {
  sessionStorage.setItem(TOKEN_KEY, newToken);
  const next = params.get("next");
  // Only a path of this site: never an address elsewhere (`//host`, `/\host`).
  const safe = next && /^\/(?![/\\])/.test(next) ? next : "/dashboard";
  location.assign(safe);
}

export async function logOut() {
  try {
    await api("POST", "/myapi/auth/logout");
  } catch {
    // Signed out here whatever the server said.
  }
  sessionStorage.removeItem(TOKEN_KEY);
  location.assign("/login");
}

// ---- forms ------------------------------------------------------------------------------

/** A form's fields as a JSON body, typed by each field's data-type. */
export function values(form) {
  const body = {};
  for (const field of form.elements) {
    if (!field.name || field.dataset.omit !== undefined || field.type === "submit") continue;
    const value = field.value.trim();
    switch (field.type === "checkbox" ? "checkbox" : field.dataset.type) {
      case "checkbox":
        body[field.name] = field.checked;
        break;
      case "int":
        if (value !== "") body[field.name] = Number(value);
        break;
      case "nullable":
        body[field.name] = value === "" ? null : value;
        break;
      case "omit-empty":
        if (value !== "") body[field.name] = value;
        break;
      case "datetime":
        if (value !== "") body[field.name] = new Date(value).toISOString();
        break;
      default:
        body[field.name] = value;
    }
  }
  return body;
}

/** Handles a form's submission with `handler(form, values)`, its failure in its error line. */
export function onSubmit(name, handler) {
  const form = formNamed(name);
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = $("[data-error]", form);
    box.textContent = "";
    const submit = $("[type=submit]", form);
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      await handler(form, values(form));
    } catch (error) {
      showError(box, error);
    } finally {
      submit.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });
}

// ---- captcha and code cooldowns -----------------------------------------------------------

export async function loadCaptcha(fieldset) {
  const data = await api("GET", "/myapi/auth/captcha");
  fieldset.dataset.captchaId = data.captcha_id;
  $("[data-captcha-image]", fieldset).src = data.image;
  const answer = $("input[name=captcha]", fieldset);
  answer.value = "";
}

export function captchaWidgets() {
  for (const fieldset of $$("[data-captcha]")) {
    $("[data-captcha-refresh]", fieldset).addEventListener("click", () =>
      attempt(() => loadCaptcha(fieldset), $("[data-error]", fieldset.form))
    );
    if (!fieldset.hidden) attempt(() => loadCaptcha(fieldset), $("[data-error]", fieldset.form));
  }
}

export const captchaOf = (form) => {
  const fieldset = $("[data-captcha]", form);
  return { captcha_id: fieldset.dataset.captchaId, captcha: $("input[name=captcha]", fieldset).value.trim() };
};

/** Counts the resend cooldown down on the button and beside it. */
export function cooldown(sendButton, seconds) {
  const status = $("[data-cooldown]", sendButton.form);
  let left = Math.max(0, Math.ceil(seconds));
  sendButton.disabled = left > 0;
  const tick = () => {
    status.textContent = left > 0 ? t("resend_in").replace("{s}", left) : "";
    sendButton.disabled = left > 0;
    if (left-- > 0) setTimeout(tick, 1000);
  };
  tick();
}

/** A send-code button: posts `path` with what `body()` gives, then starts the cooldown. */
export function codeButton(action, path, body) {
  const sendButton = $(`[data-action="${action}"]`);
  if (!sendButton) return;
  sendButton.addEventListener("click", async () => {
    const form = sendButton.form;
    const box = $("[data-error]", form);
    box.textContent = "";
    const status = $("[data-cooldown]", form);
    sendButton.disabled = true;
    try {
      const data = await api("POST", path, body(form));
      status.textContent = t("code_sent");
      setTimeout(() => cooldown(sendButton, data.cooldown), 1500);
    } catch (error) {
      showError(box, error);
      sendButton.disabled = false;
      if (error.subCode === 40008 && error.retryAfter) cooldown(sendButton, error.retryAfter);
    } finally {
      attempt(() => loadCaptcha($("[data-captcha]", form)), box);
    }
  });
}

// ---- tables and pages of lists -------------------------------------------------------------

/** A table of `items`; a column is [heading, (item) => text or node]. */
export function table(columns, items, emptyText = t("nothing_yet")) {
  if (!items.length) return el("p", { class: "empty", text: emptyText });
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, columns.map(([heading]) => el("th", { scope: "col" }, heading)))),
      el(
        "tbody",
        {},
        items.map((item) => el("tr", {}, columns.map(([, cell]) => el("td", {}, cell(item) ?? "—"))))
      )
    )
  );
}

/**
 * A paged list in `container`: `load(page)` answers the API's list shape, `columns` draw it.
 * Answers a function that reloads the current page.
 */
export function pagedTable(container, load, columns) {
  let current = 1;
  const draw = async (page) => {
    container.setAttribute("aria-busy", "true");
    try {
      const data = await load(page);
      current = page;
      const pages = Math.max(1, Math.ceil(data.total / data.page_size));
      const pager =
        pages > 1
          ? el(
              "p",
              { class: "pager" },
              button(t("previous"), () => draw(current - 1), "secondary"),
              el("span", { text: t("page_of").replace("{p}", page).replace("{n}", pages) }),
              button(t("next"), () => draw(current + 1), "secondary")
            )
          : null;
      if (pager) {
        pager.firstChild.disabled = page <= 1;
        pager.lastChild.disabled = page >= pages;
      }
      container.replaceChildren(table(columns, data.items), pager ?? "");
    } catch (error) {
      container.replaceChildren(el("p", { class: "error", role: "alert", text: errorText(error) }));
    } finally {
      container.removeAttribute("aria-busy");
    }
  };
  draw(1);
  return () => draw(current);
}

export const link = (href, text) => el("a", { href }, text);
export const external = (href, text) =>
  href ? el("a", { href, target: "_blank", rel: "noopener noreferrer" }, text) : null;
export const actions = (...buttons) => el("span", { class: "row-actions" }, buttons);
export const code = (text) => el("code", {}, text);

/** Asks before doing something that cannot be undone. */
export const confirmed = (text) => window.confirm(text);

export function dialog(name) {
  const box = $(`[data-dialog="${name}"]`);
  for (const close of $$("[data-action=close_dialog]", box)) {
    close.addEventListener("click", () => box.close());
  }
  return box;
}
