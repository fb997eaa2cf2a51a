// The signed-in user's own pages: dashboard, API keys, ledger, settings.
import {
  $,
  actions,
  api,
  attempt,
  button,
  code,
  codeButton,
  confirmed,
  day,
  dialog,
  el,
  formNamed,
  link,
  notice,
  number,
  onSubmit,
  PAGE_SIZE,
  pagedTable,
  query,
  slot,
  t,
  TOKEN_KEY,
  when,
  word,
} from "./core.js";

const pages = {};

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

export default pages;
