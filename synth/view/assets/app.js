"use strict";
// Tabs, the overview's click-to-filter links, and the state kept in the URL's hash (so a reload
// shows the same list and trajectory).

const App = (() => {
  const tabs = ["overview", "trajectories", "tasks", "errors", "run"];
  let current = "overview";
  const mounted = new Set();

  function show(name) {
    current = tabs.includes(name) ? name : "overview";
    for (const t of tabs) {
      document.getElementById("tab-" + t).hidden = t !== current;
      document.querySelector(`nav [data-tab="${t}"]`).classList.toggle("active", t === current);
    }
    if (!mounted.has(current)) {
      mounted.add(current);
      const root = document.getElementById("tab-" + current);
      if (current === "trajectories") { Trajectories.mount(root); }
      if (current === "tasks") Tasks.mount(root);
      if (current === "errors") Errors.mount(root);
    }
  }

  function saveState() {
    const params = current === "trajectories" ? new URLSearchParams(Trajectories.state()) : new URLSearchParams();
    const hash = "#" + current + (params.toString() ? "?" + params : "");
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  function restore() {
    const [name, query] = location.hash.slice(1).split("?");
    const params = Object.fromEntries(new URLSearchParams(query || ""));
    show(name || "overview");
    if (current === "trajectories") {
      const { t, ...filters } = params;
      Trajectories.set(filters);
      if (t) Trajectories.openById(t);
    }
  }

  function go(target) {
    const { go: tab, ...filters } = target.dataset;
    show(tab);
    if (tab === "trajectories") Trajectories.set(filters);
    if (tab === "errors") Errors.set(filters);
    saveState();
  }

  function init() {
    for (const t of tabs) document.querySelector(`nav [data-tab="${t}"]`).addEventListener("click", e => { e.preventDefault(); show(t); if (t === "trajectories") Trajectories.apply(true); saveState(); });
    document.getElementById("tab-overview").addEventListener("click", e => {
      const target = e.target.closest(".go");
      if (target) { e.preventDefault(); go(target); }
    });
    document.getElementById("tab-overview").addEventListener("keydown", e => {
      const target = e.target.closest(".go");
      if (target && e.key === "Enter") go(target);
    });
    restore();
    const wanted = current;
    if (wanted !== "trajectories") { show("trajectories"); show(wanted); }  // the list is ready before the first click
    window.__viewReady = performance.now();
    document.documentElement.dataset.ready = "1";
  }

  return {
    init, saveState, tab: () => current,
    openTrajectory(id) { show("trajectories"); Trajectories.set({}); Trajectories.openById(id); },
    openTask(id) { show("tasks"); Tasks.open(id); saveState(); },
  };
})();

App.init();
