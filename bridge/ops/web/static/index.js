"use strict";

(async function () {
  await login(takeToken());
  const body = document.querySelector("#rooms tbody");
  try {
    const data = await api("/api/rooms");
    for (const room of data.rooms) {
      const link = el("a", {href: "/r/" + encodeURIComponent(room.room), text: room.room});
      body.append(el("tr", {}, el("td", {}, link), el("td", {text: String(room.agents)}),
                         el("td", {text: String(room.messages)})));
    }
  } catch (e) {
    const error = document.getElementById("error");
    error.textContent = e.message;
    error.hidden = false;
  }
})();
