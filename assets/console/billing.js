// Plans and Checkout, the pages Stripe returns to, orders and invoices (their columns serve the
// admin's lists too).
import {
  $,
  actions,
  api,
  attempt,
  button,
  code,
  confirmed,
  day,
  el,
  external,
  link,
  money,
  notice,
  number,
  PAGE_SIZE,
  pagedTable,
  params,
  query,
  showError,
  slot,
  t,
  when,
  word,
} from "./core.js";

const pages = {};

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

export function orderColumns(reload, admin = false) {
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

export function invoiceColumns(admin = false) {
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

export default pages;
