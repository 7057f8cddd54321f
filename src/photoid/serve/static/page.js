// Drag-and-drop onto the upload box, and keys for the first photo still waiting for a decision.
(function () {
  const drop = document.getElementById("drop");
  const input = document.getElementById("photos");
  if (drop && input) {
    ["dragenter", "dragover"].forEach(e => drop.addEventListener(e, ev => { ev.preventDefault(); drop.classList.add("over"); }));
    ["dragleave", "drop"].forEach(e => drop.addEventListener(e, ev => { ev.preventDefault(); drop.classList.remove("over"); }));
    drop.addEventListener("drop", ev => {
      input.files = ev.dataTransfer.files;
      if (input.files.length) document.getElementById("upload").requestSubmit();
    });
  }
  document.addEventListener("keydown", ev => {
    if (ev.target.tagName === "INPUT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const open = document.querySelector("section.pending");
    if (!open) return;
    const button = open.querySelector(`button[data-key="${ev.key.toLowerCase()}"]`);
    if (button) { ev.preventDefault(); button.click(); }
  });
})();
