// The pages for people signed out: log in (with the two-factor step), sign up, forgotten and
// reset password.
import {
  $,
  api,
  attempt,
  captchaOf,
  codeButton,
  formNamed,
  loadCaptcha,
  notice,
  onSubmit,
  params,
  signedIn,
  t,
} from "./core.js";

const pages = {};

/**
 * Sends with the form's captcha once the API has asked for one (40002, after repeated failures
 * from the address) or refused its answer (40001); each answer needs a new image.
 */
async function withCaptcha(form, send) {
  const fieldset = $("[data-captcha]", form);
  try {
    return await send(fieldset.hidden ? {} : captchaOf(form));
  } catch (error) {
    if (error.subCode === 40002 || error.subCode === 40001 || !fieldset.hidden) {
      fieldset.hidden = false;
      await attempt(() => loadCaptcha(fieldset), $("[data-error]", form));
    }
    throw error;
  }
}

pages.login = () => {
  let ticket = null;
  onSubmit("login", async (form, v) => {
    // The password as typed: spaces are part of it.
    const password = form.elements.password.value;
    const data = await withCaptcha(form, (captcha) =>
      api("POST", "/myapi/auth/login", { email: v.email, password, ...captcha })
    );
    if (data.mfa_required) {
      ticket = data.ticket;
      form.hidden = true;
      const second = formNamed("login_2fa");
      second.hidden = false;
      $("input[name=code]", second).focus();
      return;
    }
    signedIn(data.token);
  });
  onSubmit("login_2fa", async (form, v) => {
    const data = await withCaptcha(form, (captcha) =>
      api("POST", "/myapi/auth/login/2fa", { ticket, code: v.code, ...captcha })
    );
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

export default pages;
