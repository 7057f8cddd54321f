// The match view: candidates, the two photos side by side (wheel zoom, drag pan, brightness, contrast, reset),
// stepping through a candidate's photos, and the keys. Decisions are the page's own forms, submitted by the keys.
(function () {
  const root = document.getElementById("match");
  if (!root) return;
  const $ = id => document.getElementById(id);
  const rows = Array.from(document.querySelectorAll("tr.candidate"));
  const sides = {
    query: {viewer: $("query-viewer"), image: $("query-image"), brightness: $("query-brightness"), contrast: $("query-contrast")},
    candidate: {viewer: $("candidate-viewer"), image: $("candidate-image"), brightness: $("candidate-brightness"), contrast: $("candidate-contrast")},
  };
  const views = {query: {scale: 1, x: 0, y: 0}, candidate: {scale: 1, x: 0, y: 0}};
  let linked = true, selected = -1, photoIndex = 0;

  // ---------------------------------------------------------------- zoom, pan, brightness, contrast
  function apply(name) {
    const side = sides[name], v = views[name];
    side.image.style.transform = `translate(${v.x}px, ${v.y}px) scale(${v.scale})`;
    const explain = $("explain-image");
    if (name === "candidate" && explain) explain.style.transform = side.image.style.transform;
    side.viewer.dataset.scale = v.scale.toFixed(4);
    side.viewer.dataset.x = v.x.toFixed(1);
    side.viewer.dataset.y = v.y.toFixed(1);
    side.image.style.filter = `brightness(${side.brightness.value}%) contrast(${side.contrast.value}%)`;
  }
  function change(name, update) {
    const targets = linked ? ["query", "candidate"] : [name];
    targets.forEach(t => { update(views[t]); apply(t); });
  }
  Object.entries(sides).forEach(([name, side]) => {
    side.viewer.addEventListener("wheel", ev => {
      ev.preventDefault();
      const rect = side.viewer.getBoundingClientRect();
      const px = ev.clientX - rect.left, py = ev.clientY - rect.top;
      const factor = ev.deltaY < 0 ? 1.25 : 1 / 1.25;
      change(name, v => {
        const scale = Math.min(Math.max(v.scale * factor, 0.2), 40);
        v.x = px - (px - v.x) * (scale / v.scale);
        v.y = py - (py - v.y) * (scale / v.scale);
        v.scale = scale;
      });
    }, {passive: false});
    let drag = null;
    side.viewer.addEventListener("pointerdown", ev => {
      drag = {x: ev.clientX, y: ev.clientY};
      side.viewer.setPointerCapture(ev.pointerId);
      side.viewer.classList.add("dragging");
    });
    side.viewer.addEventListener("pointermove", ev => {
      if (!drag) return;
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      drag = {x: ev.clientX, y: ev.clientY};
      change(name, v => { v.x += dx; v.y += dy; });
    });
    ["pointerup", "pointercancel"].forEach(type => side.viewer.addEventListener(type, () => {
      drag = null;
      side.viewer.classList.remove("dragging");
    }));
    [side.brightness, side.contrast].forEach(input => input.addEventListener("input", () => apply(name)));
    apply(name);
  });
  function reset() {
    Object.keys(sides).forEach(name => {
      views[name] = {scale: 1, x: 0, y: 0};
      sides[name].brightness.value = 100;
      sides[name].contrast.value = 100;
      apply(name);
    });
  }
  $("reset").addEventListener("click", reset);
  $("link").addEventListener("change", ev => { linked = ev.target.checked; });

  // ---------------------------------------------------------------- candidates and their photos
  function showPhoto() {
    const row = rows[selected];
    const photos = row ? JSON.parse(row.dataset.photos) : [];
    const explains = row ? JSON.parse(row.dataset.explain) : [];
    const image = sides.candidate.image, original = $("candidate-original"), explain = $("explain");
    $("explain-image").hidden = true;
    if (!photos.length) {
      image.removeAttribute("src");
      image.alt = row ? "a new individual: no catalogue photo" : "";
      $("photo-counter").textContent = "";
      $("photo-distance").textContent = "";
      original.removeAttribute("href");
      explain.hidden = true;
      return;
    }
    photoIndex = (photoIndex + photos.length) % photos.length;
    const [imageId, distance] = photos[photoIndex];
    image.src = "/photo/" + encodeURIComponent(imageId);
    image.alt = imageId;
    image.dataset.imageId = imageId;
    original.href = image.src;
    $("photo-counter").textContent = ` ${photoIndex + 1} / ${photos.length} `;
    $("photo-distance").textContent = `${imageId}: distance ${distance.toFixed(4)}`;
    // LOCAL-MATCH HOOK: the button appears where the server gave an explanation's address for this photo.
    explain.hidden = !explains[photoIndex];
    explain.dataset.url = explains[photoIndex] || "";
  }
  function select(index) {
    if (!rows.length) return;
    selected = Math.min(Math.max(index, 0), rows.length - 1);
    photoIndex = 0;
    rows.forEach((row, i) => row.classList.toggle("selected", i === selected));
    const row = rows[selected];
    const confirmId = $("confirm-id");
    if (confirmId) {
      const isNew = row.dataset.new === "1";
      confirmId.value = isNew ? "" : row.dataset.label;
      $("confirm-label").textContent = isNew ? "" : row.dataset.label;
      $("confirm").disabled = isNew;
    }
    root.dataset.selected = row.dataset.label;
    showPhoto();
  }
  rows.forEach((row, i) => row.addEventListener("click", () => select(i)));
  $("photo-prev").addEventListener("click", () => { photoIndex -= 1; showPhoto(); });
  $("photo-next").addEventListener("click", () => { photoIndex += 1; showPhoto(); });
  $("explain").addEventListener("click", () => {
    const picture = $("explain-image");
    picture.src = $("explain").dataset.url;
    picture.hidden = !picture.hidden;
  });
  const firstKnown = rows.findIndex(row => row.dataset.new !== "1");
  select(firstKnown >= 0 ? firstKnown : 0);
  // The photo stays this reviewer's while the page is open: its claim is renewed (it expires once the tab closes).
  if (root.dataset.state === "undecided") {
    setInterval(() => fetch(location.href, {method: "HEAD", credentials: "same-origin"}), 30000);
  }

  // ---------------------------------------------------------------- keys
  const submit = id => { const form = $(id); if (form) form.requestSubmit(); };
  function nameNew() {
    const input = $("new-id");
    if (!input) return;
    input.focus();
    input.select();
  }
  const help = $("help");
  $("help-button").addEventListener("click", () => { help.hidden = !help.hidden; });
  document.addEventListener("keydown", ev => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (["INPUT", "SELECT", "TEXTAREA"].includes(ev.target.tagName)) {
      if (ev.key === "Escape") ev.target.blur();
      return;
    }
    const key = ev.key === " " ? "space" : ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    const decided = root.dataset.state !== "undecided";
    const actions = {
      ArrowLeft: () => select(selected - 1),
      ArrowRight: () => select(selected + 1),
      ArrowUp: () => { if (root.dataset.prev) location.href = root.dataset.prev; },
      ArrowDown: () => { if (root.dataset.next) location.href = root.dataset.next; },
      m: () => decided ? submit("undo-photo-form")
        : (rows[selected] && rows[selected].dataset.new === "1") ? nameNew() : submit("confirm-form"),
      n: nameNew,
      s: () => submit("skip-form"),
      f: () => submit("favourite-form"),
      v: () => { location.href = root.dataset.viewUrl; },
      u: () => submit("undo-last-form"),
      "?": () => { help.hidden = !help.hidden; },
      "[": () => { photoIndex -= 1; showPhoto(); },
      "]": () => { photoIndex += 1; showPhoto(); },
      r: reset,
      l: () => { const box = $("link"); box.checked = !box.checked; linked = box.checked; },
      Escape: () => { help.hidden = true; },
    };
    actions.space = actions.m;
    const action = actions[key];
    if (action) { ev.preventDefault(); action(); }
  });
})();
