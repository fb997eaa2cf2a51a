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

export default pages;
