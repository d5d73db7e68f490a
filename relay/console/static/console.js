// Progressive enhancement only: every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // The language picker changes at once; its button stays for keyboards and no-script.
  const select = document.getElementById("lang-select");
  if (select && select.form) {
    select.addEventListener("change", () => select.form.submit());
  }
});
