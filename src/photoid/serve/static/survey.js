// Survey pages: the import form sends a large folder in batches (the server's per-request limits), and the queue
// follows the batch job's progress.
(function () {
  const form = document.getElementById("import");
  if (form) {
    const maxFiles = Number(form.dataset.maxFiles), maxBytes = Number(form.dataset.maxBytes);
    const status = document.getElementById("import-status"), bar = document.getElementById("import-progress");
    const report = document.getElementById("import-report");
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const name = document.getElementById("survey-name").value.trim();
      const files = [...document.getElementById("survey-photos").files,
                     ...document.getElementById("survey-folder").files];
      const first = new FormData(form);
      first.delete("photos");
      document.getElementById("import-button").disabled = true;
      status.textContent = "creating the survey ...";
      const created = await fetch("/surveys/import?format=json", {method: "POST", body: first});
      if (!created.ok) { document.open(); document.write(await created.text()); document.close(); return; }
      const totals = {added: 0, refused: [], duplicates: []};
      bar.hidden = false;
      bar.max = Math.max(files.length, 1);
      let sent = 0;
      while (sent < files.length) {
        const batch = new FormData();
        let bytes = 0, count = 0;
        for (const key of ["station", "survey", "date", "viewpoint"]) {
          batch.append(`default_${key}`, form.elements[`default_${key}`].value);
        }
        while (sent + count < files.length && count < maxFiles
               && (count === 0 || bytes + files[sent + count].size < maxBytes * 0.9)) {
          const file = files[sent + count];
          batch.append("photos", file, file.webkitRelativePath || file.name);
          bytes += file.size;
          count += 1;
        }
        const answer = await fetch(`/surveys/${encodeURIComponent(name)}/photos?format=json`, {method: "POST", body: batch});
        if (!answer.ok) { document.open(); document.write(await answer.text()); document.close(); return; }
        const part = await answer.json();
        totals.added += part.added;
        totals.refused.push(...part.refused);
        totals.duplicates.push(...part.duplicates);
        sent += count;
        bar.value = sent;
        status.textContent = `${sent} of ${files.length} photos sent`;
      }
      status.textContent = `${totals.added} photos added, ${totals.refused.length} refused, ${totals.duplicates.length} duplicates`;
      const list = document.createElement("ul");
      for (const r of totals.refused) list.append(Object.assign(document.createElement("li"), {textContent: `refused: ${r.file_name}: ${r.reason}`}));
      for (const d of totals.duplicates) list.append(Object.assign(document.createElement("li"), {textContent: `duplicate: ${d.file_name}: same bytes as ${d.of}`}));
      const link = Object.assign(document.createElement("a"), {href: `/surveys/${encodeURIComponent(name)}`, id: "open-survey",
                                                              textContent: `Open survey ${name}`});
      report.replaceChildren(list, link);
    });
  }
  const job = document.getElementById("job");
  if (job) {
    const bar = document.getElementById("job-progress"), text = document.getElementById("job-text");
    let wasRunning = job.dataset.state === "running";
    async function poll() {
      const answer = await fetch(job.dataset.url);
      if (!answer.ok) return;
      const s = await answer.json();
      bar.max = Math.max(s.total, 1);
      bar.value = s.done;
      job.dataset.state = s.state;
      text.textContent = `${s.done} of ${s.total} photos identified (${s.state})` + (s.error ? `: ${s.error}` : "");
      if (s.state === "running") { wasRunning = true; setTimeout(poll, 1000); }
      else if (wasRunning) location.reload();  // the queue now holds the answers
    }
    if (wasRunning) setTimeout(poll, 500);
  }
})();
