// Usage as a chart (stacked SVG bars per period and provider) and a table.
import {
  $,
  api,
  attempt,
  day,
  el,
  formNamed,
  LOCALE,
  number,
  query,
  slot,
  t,
  table,
  values,
  when,
} from "./core.js";

const pages = {};

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

export default pages;
