// Submits the form of a POST-binding hand-off (SAML) at once; the button stays for no-JS.
document.querySelectorAll("form[data-autosubmit]").forEach(function (form) { form.submit(); });
