// The console's entry point. Every page is a shell rendered by the server in the reader's
// language; this module fills it by calling the same /myapi endpoints as any frontend, with the
// page's part from the module that holds it.

import {
  $,
  $$,
  ACCESS,
  api,
  captchaWidgets,
  errorText,
  logOut,
  notice,
  PAGE,
  signIn,
  slot,
  t,
  token,
} from "./core.js";
import account from "./account.js";
import admin from "./admin.js";
import billing from "./billing.js";
import publicPages from "./public.js";
import usage from "./usage.js";

const pages = { ...publicPages, ...account, ...billing, ...usage, ...admin };

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
