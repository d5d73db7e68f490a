// Progressive enhancement only: every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // The language picker changes at once; its button stays for keyboards and no-script.
  const select = document.getElementById("lang-select");
  if (select && select.form) {
    select.addEventListener("change", () => select.form.submit());
  }
});

// --- The start-date calendar: up/down arrows move by a week ----------------------
// (Native radio buttons already move to the previous/next day with the left/right
// arrows; disabled days are skipped.)
document.addEventListener("DOMContentLoaded", () => {
  const days = Array.from(document.querySelectorAll(".calendar input[type=radio][data-day]"));
  const byDay = new Map(days.map((input) => [input.dataset.day, input]));
  const shift = (iso, delta) => {
    const d = new Date(iso + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + delta);
    return d.toISOString().slice(0, 10);
  };
  days.forEach((input) => {
    input.addEventListener("keydown", (event) => {
      const step = { ArrowUp: -7, ArrowDown: 7 }[event.key];
      if (step === undefined) return;
      let next = shift(input.dataset.day, step);
      while (byDay.has(next) && byDay.get(next).disabled) next = shift(next, step);
      const target = byDay.get(next);
      event.preventDefault();
      if (target) {
        target.checked = true;
        target.focus();
      }
    });
  });
});
