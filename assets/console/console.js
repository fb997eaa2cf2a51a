// The console's one script. Every page is a shell rendered by the server in the reader's
// language; this fills it by calling the same /myapi endpoints as any frontend.
//
// Safety rules kept throughout: text reaches the page only through textContent or attribute
// values (never innerHTML), the session token lives in this tab's sessionStorage and is sent
// only in the Authorization header of same-origin requests, and nothing runs from a string.
"use strict";

(() => {
  const STRINGS = JSON.parse(document.getElementById("strings").textContent);
  const LANG = document.documentElement.lang || "en";
  const LOCALE = LANG === "zh" ? "zh-CN" : "en";
  const PAGE = document.body.dataset.page;
  const ACCESS = document.body.dataset.access;
  const TOKEN_KEY = "meterapi.session";
  const PAGE_SIZE = 20;

  const t = (key) => STRINGS[key] ?? key;
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  const slot = (name) => $(`[data-slot="${name}"]`);
  const formNamed = (name) => $(`form[data-form="${name}"]`);
  const params = new URLSearchParams(location.search);

  // ---- elements -------------------------------------------------------------------------

  /** An element with attributes, properties and children; strings become text nodes. */
  function el(tag, attributes = {}, ...children) {
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

  const button = (label, onclick, className) =>
    el("button", { type: "button", class: className, onclick }, label);

  function notice(text, kind = "ok") {
    const box = $("[data-notice]");
    box.textContent = text;
    box.className = `notice ${kind}`;
    box.hidden = !text;
    if (text) box.scrollIntoView({ block: "nearest" });
  }

  // ---- formatting ---------------------------------------------------------------------------

  const number = (value) =>
    value === null || value === undefined ? "—" : Number(value).toLocaleString(LOCALE);
  const when = (value) => (value ? new Date(value).toLocaleString(LOCALE) : "—");
  const day = (value) => (value ? new Date(value).toLocaleDateString(LOCALE) : "—");

  /** Minor units in the currency's own number of decimals (two for USD, none for JPY). */
  function money(cents, currency) {
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
  const word = (value) => (value in STRINGS ? STRINGS[value] : value);

  // ---- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(body, status, retryAfter) {
      super(body && body.msg ? body.msg : t("unexpected_error"));
      this.status = status;
      this.code = body ? body.code : status;
      this.subCode = body ? body.sub_code : undefined;
      this.requestId = body ? body.request_id : undefined;
      this.retryAfter = retryAfter ? Number(retryAfter) : undefined;
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  /** One call of /myapi: the envelope's data, or an ApiError carrying its codes. */
  async function api(method, path, body, extraHeaders = {}) {
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

  const query = (values) => {
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(values)) {
      if (value !== null && value !== undefined && value !== "") search.set(name, value);
    }
    const text = search.toString();
    return text ? `?${text}` : "";
  };

  function errorText(error) {
    let text = error.message;
    if (error.subCode) text += ` (${error.subCode})`;
    if (error.retryAfter) text += ` ${t("retry_after").replace("{s}", error.retryAfter)}`;
    return text;
  }

  function showError(box, error) {
    if (!box) return notice(errorText(error), "bad");
    box.textContent = errorText(error);
    box.hidden = false;
  }

  /** Runs `action`, showing its failure in the page's error line. */
  async function attempt(action, box = $("[data-page-error]")) {
    try {
      if (box) box.textContent = "";
      return await action();
    } catch (error) {
      showError(box, error);
      return undefined;
    }
  }

  // ---- session --------------------------------------------------------------------------

  function signIn() {
    sessionStorage.removeItem(TOKEN_KEY);
    location.replace(`/login${query({ next: location.pathname + location.search })}`);
  }

  function signedIn(newToken) {
    sessionStorage.setItem(TOKEN_KEY, newToken);
    const next = params.get("next");
    // Only a path of this site: never an address elsewhere (`//host`, `/\host`).
    const safe = next && /^\/(?![/\\])/.test(next) ? next : "/dashboard";
    location.assign(safe);
  }

  async function logOut() {
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
  function values(form) {
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
  function onSubmit(name, handler) {
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

  async function loadCaptcha(fieldset) {
    const data = await api("GET", "/myapi/auth/captcha");
    fieldset.dataset.captchaId = data.captcha_id;
    $("[data-captcha-image]", fieldset).src = data.image;
    const answer = $("input[name=captcha]", fieldset);
    answer.value = "";
  }

  function captchaWidgets() {
    for (const fieldset of $$("[data-captcha]")) {
      $("[data-captcha-refresh]", fieldset).addEventListener("click", () =>
        attempt(() => loadCaptcha(fieldset), $("[data-error]", fieldset.form))
      );
      if (!fieldset.hidden) attempt(() => loadCaptcha(fieldset), $("[data-error]", fieldset.form));
    }
  }

  const captchaOf = (form) => {
    const fieldset = $("[data-captcha]", form);
    return { captcha_id: fieldset.dataset.captchaId, captcha: $("input[name=captcha]", fieldset).value.trim() };
  };

  /** Counts the resend cooldown down on the button and beside it. */
  function cooldown(sendButton, seconds) {
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
  function codeButton(action, path, body) {
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
  function table(columns, items, emptyText = t("nothing_yet")) {
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
  function pagedTable(container, load, columns) {
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

  const link = (href, text) => el("a", { href }, text);
  const external = (href, text) =>
    href ? el("a", { href, target: "_blank", rel: "noopener noreferrer" }, text) : null;
  const actions = (...buttons) => el("span", { class: "row-actions" }, buttons);
  const code = (text) => el("code", {}, text);

  /** Asks before doing something that cannot be undone. */
  const confirmed = (text) => window.confirm(text);

  function dialog(name) {
    const box = $(`[data-dialog="${name}"]`);
    for (const close of $$("[data-action=close_dialog]", box)) {
      close.addEventListener("click", () => box.close());
    }
    return box;
  }

  // ---- public pages -----------------------------------------------------------------------

  const pages = {};

  pages.login = () => {
    let ticket = null;
    const captcha = $("[data-captcha]");
    onSubmit("login", async (form, v) => {
      const body = { email: v.email, password: v.password };
      if (!captcha.hidden) Object.assign(body, captchaOf(form));
      try {
        const data = await api("POST", "/myapi/auth/login", body);
        if (data.mfa_required) {
          ticket = data.ticket;
          form.hidden = true;
          const second = formNamed("login_2fa");
          second.hidden = false;
          $("input[name=code]", second).focus();
          return;
        }
        signedIn(data.token);
      } catch (error) {
        // After repeated failures the API asks for a captcha (40002) or says it was wrong (40001).
        if (error.subCode === 40002 || error.subCode === 40001 || !captcha.hidden) {
          captcha.hidden = false;
          await attempt(() => loadCaptcha(captcha), $("[data-error]", form));
        }
        throw error;
      }
    });
    onSubmit("login_2fa", async (form, v) => {
      const data = await api("POST", "/myapi/auth/login/2fa", { ticket, code: v.code });
      signedIn(data.token);
    });
  };

  pages.signup = () => {
    codeButton("send_code", "/myapi/auth/email-code", (form) => ({
      email: form.elements.email.value.trim(),
      ...captchaOf(form),
    }));
    onSubmit("signup", async (form, v) => {
      const data = await api("POST", "/myapi/auth/register", {
        email: v.email,
        password: form.elements.password.value,
        email_code: v.email_code,
      });
      signedIn(data.token);
    });
  };

  pages.forgot_password = () => {
    onSubmit("forgot", async (form, v) => {
      try {
        await api("POST", "/myapi/auth/password/forgot", { email: v.email, ...captchaOf(form) });
        form.reset();
        notice(t("reset_link_sent"));
      } finally {
        attempt(() => loadCaptcha($("[data-captcha]", form)), $("[data-error]", form));
      }
    });
  };

  pages.reset_password = () => {
    // The token leaves the address bar (and the history) as soon as it is read.
    const resetToken = params.get("token");
    history.replaceState(null, "", location.pathname);
    if (!resetToken) notice(t("reset_link_missing"), "bad");
    onSubmit("reset", async (form) => {
      await api("POST", "/myapi/auth/password/reset", {
        token: resetToken || "",
        password: form.elements.password.value,
      });
      form.hidden = true;
      notice(t("password_set"));
    });
  };

  // ---- the user's pages -------------------------------------------------------------------

  pages.dashboard = async () => {
    const draw = async () => {
      const status = await api("GET", "/myapi/status");
      const limits = status.rate_limits || {};
      const card = (label, value) => [el("dt", {}, label), el("dd", {}, value)];
      const cards = slot("status");
      cards.replaceChildren(
        el("div", { class: "card" }, card(t("plan"), status.plan ? status.plan.name : t("no_plan"))),
        el("div", { class: "card" }, card(t("credits_title"), number(status.credits))),
        el("div", { class: "card" }, card(t("month_calls"), number(status.month_calls))),
        el("div", { class: "card" }, card(t("monthly_quota"), status.monthly_quota === null ? t("unlimited") : number(status.monthly_quota))),
        el("div", { class: "card" }, card(t("monthly_remaining"), status.monthly_remaining === null ? t("unlimited") : number(status.monthly_remaining))),
        el("div", { class: "card" }, card(t("rate_limits"), `${number(limits.rps)} ${t("per_second")} · ${number(limits.rph)} ${t("per_hour")}`))
      );
      cards.removeAttribute("aria-busy");
      const subscription = status.subscription;
      slot("subscription").replaceChildren(
        subscription
          ? el(
              "p",
              {},
              `${word(subscription.status)} · ${t("renews")} ${day(subscription.current_period_end)}`,
              subscription.cancel_at_period_end ? ` · ${t("ends_at_period_end")}` : "",
              " · ",
              link("/billing", t("manage"))
            )
          : el("p", {}, t("no_subscription"), " ", link("/plans", t("see_plans")))
      );
    };
    await attempt(draw, null);
    onSubmit("redeem", async (form, v) => {
      const data = await api("POST", "/myapi/redeem", { code: v.code });
      form.reset();
      notice(t("redeemed").replace("{n}", number(data.credits_added)));
      await draw();
    });
  };

  pages.keys = () => {
    const controls = dialog("key_controls");
    const reload = pagedTable(
      slot("keys"),
      (page) => api("GET", `/myapi/keys${query({ page, page_size: PAGE_SIZE })}`),
      [
        [t("key_name"), (key) => key.name],
        [t("key_prefix"), (key) => code(`${key.prefix}…`)],
        [t("created"), (key) => when(key.created_at)],
        [t("last_used"), (key) => when(key.last_used_at)],
        [t("this_month"), (key) => `${number(key.calls_this_month)} ${t("calls")} · ${number(key.credits_this_month)} ${t("credits")}`],
        [t("key_controls"), (key) => keyControlsSummary(key)],
        [
          t("actions"),
          (key) =>
            actions(
              button(t("edit"), () => editKey(key)),
              button(t("rotate"), () => rotateKey(key), "secondary"),
              button(t("revoke"), () => revokeKey(key), "danger")
            ),
        ],
      ]
    );

    function keyControlsSummary(key) {
      const parts = [];
      if (key.expires_at) parts.push(`${t("key_expires_at")}: ${when(key.expires_at)}`);
      if (key.rps_limit) parts.push(`${key.rps_limit} ${t("per_second")}`);
      if (key.spend_cap)
        parts.push(`${t("key_spend_cap")}: ${number(key.spend_cap.spent)} / ${number(key.spend_cap.credits)} (${word("period_" + key.spend_cap.period)})`);
      if (key.providers) parts.push(`${t("key_providers")}: ${key.providers.join(", ")}`);
      if (key.allowed_ips) parts.push(`${t("key_allowed_ips")}: ${key.allowed_ips.join(", ")}`);
      return parts.length ? parts.join(" · ") : t("none");
    }

    function showNewKey(data) {
      slot("new_key_value").textContent = data.key;
      slot("new_key").hidden = false;
      slot("new_key").scrollIntoView({ block: "nearest" });
    }

    $("[data-action=copy_key]").addEventListener("click", async () => {
      const value = slot("new_key_value").textContent;
      try {
        await navigator.clipboard.writeText(value);
        notice(t("copied"));
      } catch {
        // Without clipboard access the key is selected for the reader to copy.
        getSelection().selectAllChildren(slot("new_key_value"));
      }
    });

    onSubmit("create_key", async (form, v) => {
      showNewKey(await api("POST", "/myapi/keys", { name: v.name }));
      form.reset();
      reload();
    });

    const localInput = (iso) => {
      if (!iso) return "";
      const date = new Date(iso);
      return new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    };

    function editKey(key) {
      const form = formNamed("key_controls");
      form.elements.id.value = key.id;
      form.elements.name.value = key.name;
      form.elements.expires_at.value = localInput(key.expires_at);
      form.elements.rps_limit.value = key.rps_limit ?? "";
      form.elements.cap_credits.value = key.spend_cap ? key.spend_cap.credits : "";
      form.elements.cap_period.value = key.spend_cap ? key.spend_cap.period : "month";
      form.elements.providers.value = (key.providers || []).join(", ");
      form.elements.allowed_ips.value = (key.allowed_ips || []).join(", ");
      $("[data-error]", form).textContent = "";
      controls.showModal();
    }

    const list = (text) => {
      const items = text.split(",").map((item) => item.trim()).filter(Boolean);
      return items.length ? items : null;
    };

    onSubmit("key_controls", async (form, v) => {
      const body = {
        expires_at: v.expires_at ? new Date(v.expires_at).toISOString() : null,
        rps_limit: v.rps_limit ? Number(v.rps_limit) : null,
        spend_cap: v.cap_credits ? { credits: Number(v.cap_credits), period: v.cap_period } : null,
        providers: list(v.providers),
        allowed_ips: list(v.allowed_ips),
      };
      if (v.name) body.name = v.name;
      await api("PATCH", `/myapi/keys/${encodeURIComponent(v.id)}`, body);
      controls.close();
      notice(t("saved"));
      reload();
    });

    async function rotateKey(key) {
      const answer = window.prompt(t("rotate_prompt"), "3600");
      if (answer === null) return;
      await attempt(async () => {
        const data = await api("POST", `/myapi/keys/${encodeURIComponent(key.id)}/rotate`, {
          grace_seconds: Number(answer) || 0,
        });
        showNewKey(data);
        reload();
      }, null);
    }

    async function revokeKey(key) {
      if (!confirmed(t("revoke_confirm").replace("{name}", key.name))) return;
      await attempt(async () => {
        await api("DELETE", `/myapi/keys/${encodeURIComponent(key.id)}`);
        notice(t("revoked"));
        reload();
      }, null);
    }
  };

  pages.plans = async () => {
    const [plans, status] = await attempt(() =>
      Promise.all([api("GET", "/myapi/plans"), api("GET", "/myapi/status")])
    ) || [null, null];
    if (!plans) return;
    const live = status.subscription && ["active", "trialing", "past_due"].includes(status.subscription.status);
    const current = status.plan ? status.plan.id : null;

    async function buy(plan, method) {
      const order = await api(
        "POST",
        "/myapi/orders",
        { plan_id: plan.id, payment_method: method },
        { "Idempotency-Key": crypto.randomUUID() }
      );
      location.assign(order.checkout_url);
    }

    async function change(plan) {
      if (!confirmed(t("change_plan_confirm").replace("{name}", plan.name))) return;
      await api("POST", "/myapi/subscription/change", { plan_id: plan.id });
      notice(t("plan_change_requested"));
    }

    const card = (plan) => {
      const error = el("p", { class: "error", role: "alert" });
      const run = (action) => async (event) => {
        event.target.disabled = true;
        error.textContent = "";
        try {
          await action();
        } catch (failure) {
          showError(error, failure);
        } finally {
          event.target.disabled = false;
        }
      };
      let purchase;
      if (plan.plan_type === "free") {
        purchase = el("p", { class: "muted", text: t("free_plan_note") });
      } else if (plan.plan_type === "subscription" && live) {
        purchase =
          plan.id === current
            ? el("p", { class: "muted", text: t("current_plan") })
            : el("button", { type: "button", onclick: run(() => change(plan)) }, t("switch_plan"));
      } else if (plan.plan_type === "subscription") {
        purchase = el("button", { type: "button", onclick: run(() => buy(plan, "credit_card")) }, t("subscribe"));
      } else {
        const method = el(
          "select",
          { "aria-label": t("payment_method") },
          ["credit_card", "alipay", "wechat_pay"].map((value) => el("option", { value }, word(value)))
        );
        purchase = el(
          "div",
          { class: "buy" },
          el("label", {}, t("payment_method"), " ", method),
          el("button", { type: "button", onclick: run(() => buy(plan, method.value)) }, t("buy"))
        );
      }
      const price = plan.interval
        ? `${money(plan.amount_cents, plan.currency)} / ${word(plan.interval)}`
        : money(plan.amount_cents, plan.currency);
      return el(
        "article",
        { class: "plan", "data-plan-id": plan.id },
        el("h2", {}, plan.name),
        el("p", { class: "price" }, plan.plan_type === "free" ? t("free") : price),
        el(
          "ul",
          {},
          plan.credits ? el("li", {}, `${number(plan.credits)} ${t("credits")}${plan.interval ? ` / ${word(plan.interval)}` : ""}`) : null,
          el("li", {}, `${t("monthly_quota")}: ${plan.monthly_quota === null ? t("unlimited") : number(plan.monthly_quota)}`),
          el("li", {}, `${number(plan.rps_limit)} ${t("per_second")} · ${number(plan.rph_limit)} ${t("per_hour")}`)
        ),
        plan.description ? el("p", {}, plan.description) : null,
        purchase,
        error
      );
    };
    const container = slot("plans");
    container.replaceChildren(...plans.items.map(card));
    container.removeAttribute("aria-busy");
  };

  pages.checkout_return = () => {
    const orderNo = params.get("order_no");
    const cancelled = location.pathname.endsWith("/cancel");
    const box = slot("order");
    const buttons = slot("order_actions");
    if (!orderNo) {
      box.textContent = t("order_missing");
      return;
    }
    const started = Date.now();
    const resume = async () => {
      const order = await api("POST", `/myapi/orders/${encodeURIComponent(orderNo)}/checkout`);
      location.assign(order.checkout_url);
    };
    const follow = async () => {
      let order;
      try {
        order = await api("GET", `/myapi/orders/${encodeURIComponent(orderNo)}`);
      } catch (error) {
        showError($("[data-page-error]"), error);
        return;
      }
      box.dataset.status = order.status;
      const summary = `${t("order")} ${order.order_no} · ${money(order.amount_cents, order.currency)}`;
      if (order.status === "paid") {
        box.replaceChildren(el("p", { class: "ok" }, t("order_paid")), el("p", {}, summary));
        buttons.replaceChildren(link("/dashboard", t("go_dashboard")));
      } else if (order.status === "pending" && !cancelled) {
        // Stripe's webhook, not this redirect, pays the order: wait for it (two minutes).
        box.replaceChildren(el("p", {}, t("order_waiting")), el("p", {}, summary));
        if (Date.now() - started < 120000) setTimeout(follow, 1500);
        else buttons.replaceChildren(link("/billing", t("see_orders")));
      } else if (order.status === "pending") {
        box.replaceChildren(el("p", {}, t("order_cancelled_checkout")), el("p", {}, summary));
        buttons.replaceChildren(button(t("resume_payment"), () => attempt(resume)), " ", link("/plans", t("see_plans")));
      } else {
        box.replaceChildren(el("p", { class: "bad" }, `${t("order_status")}: ${word(order.status)}`), el("p", {}, summary));
        buttons.replaceChildren(link("/plans", t("see_plans")));
      }
    };
    follow();
  };

  pages.billing = () => {
    $("[data-action=portal]").addEventListener("click", () =>
      attempt(async () => {
        const data = await api("POST", "/myapi/billing/portal");
        location.assign(data.url);
      })
    );
    const reloadOrders = pagedTable(
      slot("orders"),
      (page) => api("GET", `/myapi/orders${query({ page, page_size: PAGE_SIZE })}`),
      orderColumns(() => reloadOrders())
    );
    pagedTable(
      slot("invoices"),
      (page) => api("GET", `/myapi/invoices${query({ page, page_size: PAGE_SIZE })}`),
      invoiceColumns()
    );
  };

  function orderColumns(reload, admin = false) {
    const columns = [
      [t("order"), (order) => code(order.order_no)],
      [t("plan"), (order) => String(order.plan_id)],
      [t("billing_mode"), (order) => word(order.billing_mode)],
      [t("amount"), (order) => money(order.amount_cents, order.currency)],
      [t("status"), (order) => el("span", { class: `status ${order.status}` }, word(order.status))],
      [t("created"), (order) => when(order.created_at)],
      [t("paid_at"), (order) => when(order.paid_at)],
      [
        t("subscription"),
        (order) =>
          order.subscription
            ? `${word(order.subscription.status)} · ${day(order.subscription.current_period_end)}${order.subscription.cancel_at_period_end ? ` · ${t("ends_at_period_end")}` : ""}`
            : "—",
      ],
    ];
    if (admin) {
      columns.unshift([t("user_id"), (order) => link(`/admin/orders?user_id=${order.user_id}`, order.user_id.slice(0, 8))]);
      return columns;
    }
    columns.push([
      t("actions"),
      (order) => {
        const buttons = [];
        if (order.status === "pending") {
          buttons.push(
            button(t("pay"), () =>
              attempt(async () => {
                const fresh = await api("POST", `/myapi/orders/${encodeURIComponent(order.order_no)}/checkout`);
                location.assign(fresh.checkout_url);
              })
            )
          );
        }
        const subscription = order.subscription;
        if (subscription && ["active", "trialing", "past_due"].includes(subscription.status) && !subscription.cancel_at_period_end) {
          buttons.push(
            button(
              t("cancel_subscription"),
              () => {
                if (!confirmed(t("cancel_subscription_confirm"))) return;
                attempt(async () => {
                  await api("POST", `/myapi/orders/${encodeURIComponent(order.order_no)}/cancel`, { at_period_end: true });
                  notice(t("subscription_cancelled"));
                  reload();
                });
              },
              "danger"
            )
          );
        }
        return buttons.length ? actions(...buttons) : "—";
      },
    ]);
    return columns;
  }

  function invoiceColumns(admin = false) {
    const columns = [
      [t("invoice_number"), (invoice) => invoice.number || "—"],
      [t("order"), (invoice) => (invoice.order_no ? code(invoice.order_no) : "—")],
      [t("status"), (invoice) => word(invoice.status)],
      [t("amount_paid"), (invoice) => money(invoice.amount_paid_cents, invoice.currency)],
      [t("period"), (invoice) => (invoice.period_start ? `${day(invoice.period_start)} – ${day(invoice.period_end)}` : "—")],
      [t("created"), (invoice) => when(invoice.created_at)],
      [
        t("documents"),
        (invoice) => actions(external(invoice.hosted_invoice_url, t("view")), " ", external(invoice.pdf_url, "PDF")),
      ],
    ];
    if (admin) columns.unshift([t("user_id"), (invoice) => (invoice.user_id ? invoice.user_id.slice(0, 8) : "—")]);
    return columns;
  }

  pages.ledger = () => {
    pagedTable(
      slot("ledger"),
      (page) => api("GET", `/myapi/credits/ledger${query({ page, page_size: PAGE_SIZE })}`),
      [
        [t("created"), (entry) => when(entry.created_at)],
        [t("amount"), (entry) => el("span", { class: entry.amount < 0 ? "minus" : "plus" }, `${entry.amount > 0 ? "+" : ""}${number(entry.amount)}`)],
        [t("balance_after"), (entry) => number(entry.balance_after)],
        [t("reason"), (entry) => word(entry.reason)],
        [t("reference"), (entry) => (entry.reference ? code(entry.reference) : "—")],
      ]
    );
  };

  // ---- usage chart --------------------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";
  const svg = (tag, attributes = {}, ...children) => {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    for (const child of children) node.append(child);
    return node;
  };
  const PALETTE = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];

  /** Stacked bars, one per time bucket, a colour per provider; every bar has a title. */
  function usageChart(buckets, from, to, granularity, metric) {
    const step = granularity === "hour" ? 3600000 : 86400000;
    const first = Math.floor(from.getTime() / step) * step;
    const slots = [];
    for (let start = first; start < to.getTime(); start += step) slots.push(start);
    const providers = [...new Set(buckets.map((bucket) => bucket.provider))].sort();
    const values = new Map();
    for (const bucket of buckets) {
      const at = Math.floor(new Date(bucket.start).getTime() / step) * step;
      const key = `${at}|${bucket.provider}`;
      values.set(key, (values.get(key) || 0) + Number(bucket[metric] || 0));
    }
    const totals = slots.map((start) => providers.reduce((sum, p) => sum + (values.get(`${start}|${p}`) || 0), 0));
    const max = Math.max(1, ...totals);
    const width = 720;
    const height = 260;
    const left = 48;
    const bottom = 24;
    const plotHeight = height - bottom - 8;
    const barWidth = (width - left) / Math.max(1, slots.length);
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": t("usage_chart_label"),
      class: "usage-chart",
    });
    // Grid lines at whole numbers only: 0, the middle and the top, fewer when they coincide.
    for (const tick of new Set([0, Math.round(max / 2), max])) {
      const y = 8 + plotHeight * (1 - tick / max);
      chart.append(
        svg("line", { x1: left, x2: width, y1: y, y2: y, class: "grid" }),
        svg("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, number(tick))
      );
    }
    slots.forEach((start, index) => {
      let y = 8 + plotHeight;
      providers.forEach((provider, p) => {
        const value = values.get(`${start}|${provider}`) || 0;
        if (!value) return;
        const barHeight = (value / max) * plotHeight;
        y -= barHeight;
        const title = `${granularity === "hour" ? when(start) : day(start)} · ${provider}: ${number(value)} ${t(metric)}`;
        chart.append(
          svg(
            "rect",
            {
              x: left + index * barWidth + 1,
              y,
              width: Math.max(1, barWidth - 2),
              height: barHeight,
              fill: PALETTE[p % PALETTE.length],
              "data-provider": provider,
              "data-value": value,
            },
            svg("title", {}, title)
          )
        );
      });
      const every = Math.ceil(slots.length / 8);
      if (index % every === 0) {
        const label = granularity === "hour" ? new Date(start).toLocaleTimeString(LOCALE, { hour: "2-digit", minute: "2-digit" }) : new Date(start).toLocaleDateString(LOCALE, { month: "short", day: "numeric" });
        chart.append(svg("text", { x: left + index * barWidth + barWidth / 2, y: height - 6, "text-anchor": "middle", class: "axis" }, label));
      }
    });
    const legend = el(
      "ul",
      { class: "legend" },
      providers.map((provider, p) =>
        el("li", {}, el("span", { class: `swatch swatch-${p % PALETTE.length}`, "aria-hidden": "true" }), provider)
      )
    );
    return [chart, legend, totals.reduce((a, b) => a + b, 0)];
  }

  pages.usage = async () => {
    const form = formNamed("usage");
    const keys = await attempt(() => api("GET", `/myapi/keys${query({ page_size: 100 })}`), $("[data-error]", form));
    if (keys) {
      form.elements.key_id.append(...keys.items.map((key) => el("option", { value: key.id }, `${key.name} (${key.prefix}…)`)));
    }
    const draw = async () => {
      const v = values(form);
      const to = new Date();
      const from = new Date(to.getTime() - Number(v.range) * 86400000);
      // Hours over a month are 720 bars: a day's granularity reads better there.
      const granularity = v.range === "30" && v.granularity === "hour" ? "day" : v.granularity;
      const buckets = [];
      for (let page = 1; ; page += 1) {
        const data = await api(
          "GET",
          `/myapi/usage${query({ from: from.toISOString(), to: to.toISOString(), granularity, key_id: v.key_id, page, page_size: 100 })}`
        );
        buckets.push(...data.items);
        if (page * data.page_size >= data.total) break;
      }
      const [chart, legend, total] = usageChart(buckets, from, to, granularity, v.metric);
      slot("chart").replaceChildren(chart, legend);
      slot("chart").dataset.total = total;
      slot("chart_caption").textContent = t("usage_total").replace("{n}", number(total)).replace("{metric}", t(`${v.metric}_title`));
      slot("usage_table").replaceChildren(
        table(
          [
            [t("period_start"), (bucket) => (granularity === "day" ? day(bucket.start) : when(bucket.start))],
            [t("provider"), (bucket) => bucket.provider],
            [t("calls_title"), (bucket) => number(bucket.calls)],
            [t("credits_title"), (bucket) => number(bucket.credits)],
            [t("errors"), (bucket) => number(bucket.errors)],
          ],
          buckets.slice().reverse(),
          t("no_usage")
        )
      );
    };
    form.addEventListener("change", () => attempt(draw, $("[data-error]", form)));
    form.addEventListener("submit", (event) => event.preventDefault());
    await attempt(draw, $("[data-error]", form));
  };

  // ---- settings -----------------------------------------------------------------------------

  pages.settings = async (profile) => {
    const facts = (current) => {
      slot("profile").replaceChildren(
        el("dt", {}, t("email")), el("dd", { "data-field": "email" }, current.email),
        el("dt", {}, t("role")), el("dd", {}, word(current.role)),
        el("dt", {}, t("status")), el("dd", {}, word(current.status)),
        el("dt", {}, t("member_since")), el("dd", {}, day(current.created_at))
      );
      const preferences = formNamed("preferences");
      preferences.elements.lang.value = current.lang;
      preferences.elements.low_balance_alert.value = current.low_balance_alert ?? "";
    };
    facts(profile);

    onSubmit("preferences", async (form, v) => {
      const alert = form.elements.low_balance_alert.value.trim();
      facts({ ...profile, ...(await api("PATCH", "/myapi/user/profile", { lang: v.lang, low_balance_alert: alert === "" ? null : Number(alert) })) });
      notice(t("saved"));
    });

    onSubmit("change_password", async (form) => {
      await api("POST", "/myapi/auth/password/change", {
        old_password: form.elements.old_password.value,
        new_password: form.elements.new_password.value,
      });
      form.reset();
      notice(t("password_changed"));
      reloadSessions();
    });

    codeButton("send_email_code", "/myapi/user/email/code", (form) => ({
      new_email: form.elements.new_email.value.trim(),
      ...captchaOf(form),
    }));
    onSubmit("change_email", async (form, v) => {
      const updated = await api("POST", "/myapi/user/email", { new_email: v.new_email, email_code: v.email_code });
      facts({ ...profile, ...updated });
      form.reset();
      notice(t("email_changed"));
    });

    // Two-factor: set up (QR and secret), enable with a code (recovery codes once), disable.
    const twoFactor = (enabled) => {
      formNamed("disable_2fa").hidden = !enabled;
      slot("two_factor").replaceChildren(
        el("p", {}, enabled ? t("two_factor_on") : t("two_factor_off")),
        enabled ? "" : button(t("set_up_2fa"), () => attempt(setUp, null))
      );
    };
    const setUp = async () => {
      const data = await api("POST", "/myapi/auth/2fa/setup");
      slot("two_factor_qr").src = data.qr;
      slot("two_factor_secret").textContent = data.secret;
      slot("two_factor_setup").hidden = false;
      $("input[name=code]", formNamed("enable_2fa")).focus();
    };
    twoFactor(profile.two_factor);
    onSubmit("enable_2fa", async (form, v) => {
      const data = await api("POST", "/myapi/auth/2fa/enable", { code: v.code });
      form.reset();
      slot("two_factor_setup").hidden = true;
      slot("recovery_list").replaceChildren(...data.recovery_codes.map((recovery) => el("li", {}, code(recovery))));
      slot("recovery_codes").hidden = false;
      twoFactor(true);
    });
    onSubmit("disable_2fa", async (form, v) => {
      await api("POST", "/myapi/auth/2fa/disable", { password: form.elements.password.value, code: v.code });
      form.reset();
      slot("recovery_codes").hidden = true;
      twoFactor(false);
      notice(t("two_factor_disabled"));
    });

    const reloadSessions = pagedTable(
      slot("sessions"),
      (page) => api("GET", `/myapi/auth/sessions${query({ page, page_size: PAGE_SIZE })}`),
      [
        [t("signed_in"), (session) => when(session.created_at)],
        [t("last_seen"), (session) => when(session.last_seen_at)],
        [t("ip"), (session) => session.ip || "—"],
        [t("device"), (session) => session.user_agent || "—"],
        [
          t("actions"),
          (session) =>
            session.current
              ? el("strong", {}, t("this_session"))
              : button(t("sign_out"), () =>
                  attempt(async () => {
                    await api("DELETE", `/myapi/auth/sessions/${encodeURIComponent(session.id)}`);
                    reloadSessions();
                  }, null), "secondary"),
        ],
      ]
    );
    $("[data-action=revoke_others]").addEventListener("click", () =>
      attempt(async () => {
        await api("POST", "/myapi/auth/sessions/revoke-others");
        notice(t("others_signed_out"));
        reloadSessions();
      }, null)
    );

    $("[data-action=export]").addEventListener("click", () =>
      attempt(async () => {
        const data = await api("GET", "/myapi/user/export");
        const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
        const address = URL.createObjectURL(blob);
        const anchor = el("a", { href: address, download: "meterapi-export.json" });
        document.body.append(anchor);
        anchor.click();
        anchor.remove();
        setTimeout(() => URL.revokeObjectURL(address), 10000);
      }, null)
    );

    onSubmit("delete_account", async (form, v) => {
      if (!confirmed(t("delete_confirm"))) return;
      const body = { password: form.elements.password.value };
      if (v.code) body.code = v.code;
      await api("DELETE", "/myapi/user", body);
      sessionStorage.removeItem(TOKEN_KEY);
      location.assign("/signup");
    });
  };

  // ---- admin pages ------------------------------------------------------------------------

  pages.admin_users = () => {
    const credits = dialog("credits");
    let search = "";
    let reload = () => {};
    const userAction = (user, action) =>
      attempt(async () => {
        await api("POST", `/myapi/admin/users/${user.id}/${action}`);
        notice(t(action === "freeze" ? "user_frozen" : "user_unfrozen").replace("{email}", user.email));
        reload();
      }, null);
    const draw = () => {
      reload = pagedTable(
        slot("users"),
        (page) => api("GET", `/myapi/admin/users${query({ email: search, page, page_size: PAGE_SIZE })}`),
        [
          [t("email"), (user) => user.email],
          [t("role"), (user) => word(user.role)],
          [t("status"), (user) => el("span", { class: `status ${user.status}` }, word(user.status), user.frozen_reason ? ` (${word(user.frozen_reason)})` : "")],
          [t("credits_title"), (user) => number(user.credits)],
          [t("created"), (user) => day(user.created_at)],
          [
            t("actions"),
            (user) =>
              actions(
                user.status === "frozen"
                  ? button(t("unfreeze"), () => userAction(user, "unfreeze"), "secondary")
                  : button(t("freeze"), () => confirmed(t("freeze_confirm").replace("{email}", user.email)) && userAction(user, "freeze"), "danger"),
                button(t("adjust_credits"), () => {
                  const form = formNamed("adjust_credits");
                  form.reset();
                  form.elements.id.value = user.id;
                  slot("credits_user").textContent = `${user.email} · ${number(user.credits)} ${t("credits")}`;
                  credits.showModal();
                }),
                link(`/admin/orders?user_id=${user.id}`, t("orders"))
              ),
          ],
        ]
      );
    };
    onSubmit("user_search", async (form, v) => {
      search = v.email;
      draw();
    });
    onSubmit("adjust_credits", async (form, v) => {
      await api("POST", `/myapi/admin/users/${form.elements.id.value}/credits`, { amount: v.amount, reason: v.reason });
      credits.close();
      notice(t("saved"));
      reload();
    });
    draw();
  };

  /** An admin list with a form that creates a record or, after "edit", replaces it. */
  function editableList({ listPath, slotName, formName, titleSlot, newTitle, editTitle, key, columns, fill, save, remove }) {
    const form = formNamed(formName);
    let editing = null;
    const startNew = () => {
      editing = null;
      slot(titleSlot).textContent = newTitle;
    };
    const reload = async () => {
      const data = await api("GET", listPath);
      slot(slotName).replaceChildren(
        table(
          [
            ...columns,
            [
              t("actions"),
              (record) =>
                actions(
                  button(t("edit"), () => {
                    editing = record;
                    form.reset();
                    fill(form, record);
                    slot(titleSlot).textContent = `${editTitle} ${key(record)}`;
                    form.scrollIntoView({ block: "start" });
                  }),
                  button(t("delete"), () => {
                    if (!confirmed(t("delete_record_confirm").replace("{name}", key(record)))) return;
                    attempt(async () => {
                      await remove(record);
                      notice(t("deleted"));
                      await reload();
                    });
                  }, "danger")
                ),
            ],
          ],
          // The admin lists of plans and providers are short and come whole, not paged.
          Array.isArray(data) ? data : data.items
        )
      );
    };
    form.addEventListener("reset", startNew);
    onSubmit(formName, async (_, v) => {
      await save(editing, v);
      notice(t("saved"));
      form.reset();
      await reload();
    });
    attempt(reload);
  }

  pages.admin_plans = () =>
    editableList({
      listPath: "/myapi/admin/plans",
      slotName: "plans",
      formName: "plan",
      titleSlot: "plan_form_title",
      newTitle: t("new_plan"),
      editTitle: t("edit_plan"),
      key: (plan) => `#${plan.id} ${plan.name}`,
      columns: [
        ["id", (plan) => String(plan.id)],
        [t("name"), (plan) => plan.name],
        [t("plan_type"), (plan) => word(plan.plan_type)],
        [t("price"), (plan) => `${money(plan.amount_cents, plan.currency)}${plan.interval ? ` / ${word(plan.interval)}` : ""}`],
        [t("credits_title"), (plan) => number(plan.credits)],
        [t("rate_limits"), (plan) => `${number(plan.rps_limit)} / ${number(plan.rph_limit)}`],
        [t("active"), (plan) => (plan.active ? t("yes") : t("no"))],
      ],
      fill: (form, plan) => {
        for (const name of ["name", "plan_type", "amount_cents", "currency", "credits", "rps_limit", "rph_limit", "description"]) {
          form.elements[name].value = plan[name] ?? "";
        }
        form.elements.interval.value = plan.interval || "";
        form.elements.monthly_quota.value = plan.monthly_quota ?? "";
        form.elements.stripe_price_id.value = plan.stripe_price_id || "";
        form.elements.active.checked = plan.active;
        form.elements.allow_promotion_codes.checked = Boolean(plan.allow_promotion_codes);
      },
      save: (plan, v) =>
        plan ? api("PUT", `/myapi/admin/plans/${plan.id}`, v) : api("POST", "/myapi/admin/plans", v),
      remove: (plan) => api("DELETE", `/myapi/admin/plans/${plan.id}`),
    });

  pages.admin_providers = () =>
    editableList({
      listPath: "/myapi/admin/providers",
      slotName: "providers",
      formName: "provider",
      titleSlot: "provider_form_title",
      newTitle: t("new_provider"),
      editTitle: t("edit_provider"),
      key: (provider) => provider.slug,
      columns: [
        [t("slug"), (provider) => code(provider.slug)],
        [t("base_url"), (provider) => provider.base_url],
        [t("auth_header"), (provider) => provider.auth_header || "—"],
        [t("auth_value"), (provider) => provider.auth_value || "—"],
        [t("cost"), (provider) => number(provider.cost)],
        [t("timeout_ms"), (provider) => number(provider.timeout_ms)],
        [t("enabled"), (provider) => (provider.enabled ? t("yes") : t("no"))],
      ],
      fill: (form, provider) => {
        for (const name of ["slug", "base_url", "cost", "timeout_ms"]) form.elements[name].value = provider[name];
        form.elements.auth_header.value = provider.auth_header || "";
        form.elements.enabled.checked = provider.enabled;
      },
      save: (provider, v) =>
        provider
          ? api("PUT", `/myapi/admin/providers/${encodeURIComponent(provider.slug)}`, v)
          : api("POST", "/myapi/admin/providers", v),
      remove: (provider) => api("DELETE", `/myapi/admin/providers/${encodeURIComponent(provider.slug)}`),
    });

  pages.admin_orders = () => {
    const form = formNamed("order_filter");
    form.elements.user_id.value = params.get("user_id") || "";
    const draw = () => {
      const v = values(form);
      pagedTable(
        slot("orders"),
        (page) => api("GET", `/myapi/admin/orders${query({ user_id: v.user_id, status: v.status, page, page_size: PAGE_SIZE })}`),
        orderColumns(() => draw(), true)
      );
    };
    onSubmit("order_filter", async () => draw());
    draw();
    pagedTable(
      slot("invoices"),
      (page) => api("GET", `/myapi/admin/invoices${query({ page, page_size: PAGE_SIZE })}`),
      invoiceColumns(true)
    );
  };

  pages.admin_redemption = () => {
    const reload = pagedTable(
      slot("batches"),
      (page) => api("GET", `/myapi/admin/redemption-batches${query({ page, page_size: PAGE_SIZE })}`),
      [
        ["id", (batch) => String(batch.id)],
        [t("note"), (batch) => batch.note || "—"],
        [t("grants"), (batch) => (batch.plan_id ? `${t("plan")} #${batch.plan_id}` : `${number(batch.credits)} ${t("credits")}`)],
        [t("used"), (batch) => `${number(batch.used)} / ${number(batch.count)}`],
        [t("expires_at"), (batch) => when(batch.expires_at)],
        [t("status"), (batch) => (batch.disabled_at ? t("disabled") : t("active"))],
        [
          t("actions"),
          (batch) =>
            batch.disabled_at
              ? "—"
              : button(t("disable"), () => {
                  if (!confirmed(t("disable_batch_confirm"))) return;
                  attempt(async () => {
                    await api("POST", `/myapi/admin/redemption-batches/${batch.id}/disable`);
                    reload();
                  });
                }, "danger"),
        ],
      ]
    );
    onSubmit("batch", async (form, v) => {
      const data = await api("POST", "/myapi/admin/redemption-batches", v);
      slot("codes_text").value = data.codes.join("\n");
      slot("codes").hidden = false;
      form.reset();
      reload();
    });
  };

  // ---- start ------------------------------------------------------------------------------

  async function start() {
    for (const logout of $$("[data-action=logout]")) logout.addEventListener("click", logOut);
    captchaWidgets();
    if (ACCESS === "public") {
      pages[PAGE]?.();
      document.body.dataset.ready = "true";
      return;
    }
    if (!token()) return signIn();
    let profile;
    try {
      profile = await api("GET", "/myapi/user/profile");
    } catch (error) {
      notice(errorText(error), "bad");
      return;
    }
    slot("who").textContent = profile.email;
    if (profile.role === "admin") for (const nav of $$("[data-admin-only]")) nav.hidden = false;
    if (ACCESS === "admin" && profile.role !== "admin") {
      notice(t("admins_only"), "bad");
      $("main").replaceChildren($("[data-notice]"));
      return;
    }
    await pages[PAGE]?.(profile);
    document.body.dataset.ready = "true";
  }

  // The current page's link in the navigation is marked for the reader and for screen readers.
  for (const anchor of $$("header nav a")) {
    if (anchor.getAttribute("href") === location.pathname) anchor.setAttribute("aria-current", "page");
  }
  start();
})();
