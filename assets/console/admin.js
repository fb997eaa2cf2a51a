// The admin's pages: users, plans, providers, orders and invoices, redemption batches.
import {
  actions,
  api,
  attempt,
  button,
  code,
  confirmed,
  day,
  dialog,
  el,
  formNamed,
  link,
  money,
  notice,
  number,
  onSubmit,
  PAGE_SIZE,
  pagedTable,
  params,
  query,
  slot,
  t,
  table,
  values,
  when,
  word,
} from "./core.js";
import { invoiceColumns, orderColumns } from "./billing.js";

const pages = {};

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

export default pages;
