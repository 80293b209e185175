// seqlearn notebook widgets: attention alignments and a hidden-state explorer.
//
// One self-contained ES module (no imports, no network) rendered by anywidget, or by the
// standalone page that `view.save("x.html")` writes.  Token text only ever reaches the
// page through textContent and <option>.text, never through innerHTML, so a token such
// as "<script>alert(1)</script>" shows as text and runs nothing.
//
// Matrices arrive as little-endian float32 bytes (a DataView from the widget manager).

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function labelled(text, control) {
  const label = h("label", "sl-label", text + " ");
  label.append(control);
  return label;
}

function floats(data) {
  if (!data) return new Float32Array(0);
  const buffer = data.buffer ?? data;
  const offset = data.byteOffset ?? 0;
  if (offset % 4 === 0) return new Float32Array(buffer, offset, data.byteLength / 4);
  return new Float32Array(buffer.slice(offset, offset + data.byteLength));
}

// Colour of a value: linear interpolation between evenly spread #rrggbb stops (as colors.py).
function colorScale(stops, vmin, vmax) {
  const rgb = stops.map((s) => [1, 3, 5].map((k) => parseInt(s.slice(k, k + 2), 16)));
  const span = vmax > vmin ? vmax - vmin : 1;
  return (value) => {
    const t = Math.min(1, Math.max(0, (value - vmin) / span)) * (rgb.length - 1);
    const lo = Math.min(Math.floor(t), rgb.length - 2);
    const f = t - lo;
    const c = rgb[lo].map((v, k) => Math.round(v * (1 - f) + rgb[lo + 1][k] * f));
    return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
  };
}

function fmt(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

function legend(stops, vmin, vmax, caption) {
  const box = h("div", "sl-legend");
  const bar = h("span", "sl-legend-bar");
  bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  box.append(h("span", "sl-legend-caption", caption), h("span", "sl-legend-tick", fmt(vmin)), bar,
    h("span", "sl-legend-tick", fmt(vmax)));
  return box;
}

function shorten(text, n) {
  return text.length <= n ? text : text.slice(0, n - 1) + "…";
}

// Subscribe to model changes; returns the function that unsubscribes.
function listen(model, handlers) {
  for (const [event, fn] of Object.entries(handlers)) model.on(event, fn);
  return () => { for (const [event, fn] of Object.entries(handlers)) model.off(event, fn); };
}

// ---------------------------------------------------------------------------------------
// Attention alignments

function renderAttention(model, el) {
  const root = h("div", "sl-widget sl-attention");
  const sentenceSelect = h("select", "sl-sentence");
  const hypothesisSelect = h("select", "sl-hypothesis");
  const stepInput = h("input", "sl-step");
  stepInput.type = "range";
  stepInput.min = "1";
  const stepText = h("span", "sl-step-text");
  const play = h("button", "sl-play", "▶");
  play.type = "button";
  play.title = "reveal the target token by token";
  const controls = h("div", "sl-controls");
  controls.append(labelled("sentence", sentenceSelect), labelled("hypothesis", hypothesisSelect),
    labelled("step", stepInput), stepText, play);
  const readout = h("div", "sl-readout");
  const grid = h("div", "sl-grid");
  const scroll = h("div", "sl-scroll");
  scroll.append(grid);
  const stops = model.get("_colormaps").sequential;
  const color = colorScale(stops, 0, 1);
  root.append(controls, readout, scroll, legend(stops, 0, 1, "attention weight"));
  el.replaceChildren(root);

  const idle = "Hover a cell or a token to see its weights.";
  let item, weights, cells, srcLabels, tgtLabels, touched = [], timer = null;

  function selected() {
    const items = model.get("items");
    const sentence = model.get("sentence");
    return items.find((it) => it.sentence === sentence && it.rank === model.get("hypothesis"))
      ?? items.find((it) => it.sentence === sentence && it.rank === 0) ?? items[0];
  }

  function revealed() {
    const step = model.get("step");
    return step === null || step === undefined ? item.rows : Math.min(Math.max(step, 0), item.rows);
  }

  function fillSelectors() {
    const items = model.get("items");
    sentenceSelect.replaceChildren(...items.filter((it) => it.rank === 0).map((it) => {
      const option = h("option", "", shorten(`${it.sentence + 1}: ${it.source.join(" ")}`, 70));
      option.value = String(it.sentence);
      return option;
    }));
    sentenceSelect.value = String(item.sentence);
    hypothesisSelect.replaceChildren(...items.filter((it) => it.sentence === item.sentence).map((it) => {
      const score = it.score === null ? "" : ` (${it.score.toFixed(3)})`;
      const option = h("option", "", shorten(`#${it.rank + 1}${score}: ${it.target.join(" ")}`, 70));
      option.value = String(it.rank);
      return option;
    }));
    hypothesisSelect.value = String(item.rank);
  }

  function draw() {
    item = selected();
    weights = floats(model.get("weights")).subarray(item.offset, item.offset + item.rows * item.cols);
    fillSelectors();
    const { rows, cols } = item;
    const size = Math.max(rows, cols);
    const cell = size <= 20 ? 24 : size <= 40 ? 16 : 12;
    grid.style.setProperty("--cell", `${cell}px`);
    grid.style.gridTemplateColumns = `max-content repeat(${cols}, ${cell}px)`;
    grid.style.gridTemplateRows = `max-content repeat(${rows}, ${cell}px)`;
    const nodes = document.createDocumentFragment();
    nodes.append(h("div", "sl-corner"));
    srcLabels = item.source.map((token, j) => {
      const label = h("div", "sl-src");
      label.dataset.j = String(j);
      label.title = token;
      label.append(h("span", "", token));
      nodes.append(label);
      return label;
    });
    tgtLabels = [];
    cells = [];
    for (let i = 0; i < rows; i++) {
      const label = h("div", "sl-tgt", item.target[i]);
      label.dataset.i = String(i);
      label.title = item.target[i];
      nodes.append(label);
      tgtLabels.push(label);
      const row = [];
      for (let j = 0; j < cols; j++) {
        const c = h("div", "sl-cell");
        c.dataset.i = String(i);
        c.dataset.j = String(j);
        c.style.background = color(weights[i * cols + j]);
        nodes.append(c);
        row.push(c);
      }
      cells.push(row);
    }
    grid.replaceChildren(nodes);
    touched = [];
    readout.textContent = idle;
    showStep();
  }

  function showStep() {
    const shown = revealed();
    stepInput.max = String(item.rows);
    stepInput.value = String(shown);
    stepText.textContent = `${shown} / ${item.rows}`;
    for (let i = 0; i < item.rows; i++) {
      const future = i >= shown;
      tgtLabels[i].classList.toggle("sl-future", future);
      for (const c of cells[i]) c.classList.toggle("sl-future", future);
    }
  }

  function clear() {
    for (const node of touched) {
      node.classList.remove("sl-active", "sl-linked");
      node.style.removeProperty("--w");
    }
    touched = [];
  }

  function mark(node, cls, weight) {
    node.classList.add(cls);
    if (weight !== undefined) node.style.setProperty("--w", weight.toFixed(3));
    touched.push(node);
  }

  // Tint each of `labels` by its weight; the readout lists the strongest links.
  function link(labels, tokens, weightOf, count, prefix) {
    const links = [];
    for (let k = 0; k < count; k++) {
      const w = weightOf(k);
      if (w >= 0.1) mark(labels[k], "sl-linked", w);
      links.push([w, k]);
    }
    links.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    readout.textContent = prefix + links.slice(0, 3).map(([w, k]) => `“${tokens[k]}” ${w.toFixed(3)}`).join(", ");
  }

  function hover(event) {
    const node = event.target.closest("[data-i], [data-j]");
    if (!node || !grid.contains(node)) return;
    const i = node.dataset.i === undefined ? null : Number(node.dataset.i);
    const j = node.dataset.j === undefined ? null : Number(node.dataset.j);
    const shown = revealed();
    if (i !== null && i >= shown) return;
    clear();
    const cols = item.cols;
    if (i !== null && j !== null) {
      mark(cells[i][j], "sl-active");
      mark(tgtLabels[i], "sl-active");
      mark(srcLabels[j], "sl-active");
      readout.textContent = `“${item.target[i]}” ← “${item.source[j]}”: weight ${weights[i * cols + j].toFixed(3)}`;
    } else if (i !== null) {
      mark(tgtLabels[i], "sl-active");
      link(srcLabels, item.source, (k) => weights[i * cols + k], cols, `“${item.target[i]}” attends to `);
    } else {
      mark(srcLabels[j], "sl-active");
      link(tgtLabels, item.target, (k) => weights[k * cols + j], shown, `“${item.source[j]}” is attended by `);
    }
  }

  function setStep(step) {
    model.set("step", step);
    model.save_changes();
  }

  function stop() {
    if (timer !== null) clearInterval(timer);
    timer = null;
    play.textContent = "▶";
  }

  grid.addEventListener("mouseover", hover);
  grid.addEventListener("mouseleave", () => { clear(); readout.textContent = idle; });
  sentenceSelect.addEventListener("change", () => {
    stop();
    model.set("sentence", Number(sentenceSelect.value));
    model.set("hypothesis", 0);
    model.set("step", null);
    model.save_changes();
  });
  hypothesisSelect.addEventListener("change", () => {
    stop();
    model.set("hypothesis", Number(hypothesisSelect.value));
    model.save_changes();
  });
  stepInput.addEventListener("input", () => { stop(); setStep(Number(stepInput.value)); });
  play.addEventListener("click", () => {
    if (timer !== null) return stop();
    play.textContent = "■";
    setStep(1);
    timer = setInterval(() => {
      const next = revealed() + 1;
      if (next > item.rows) return stop();
      setStep(next);
    }, 400);
  });

  draw();
  const unlisten = listen(model, { "change:sentence": draw, "change:hypothesis": draw, "change:items": draw,
    "change:weights": draw, "change:step": showStep });
  return () => { stop(); unlisten(); };
}

// ---------------------------------------------------------------------------------------
// Hidden-state explorer

function renderHidden(model, el) {
  const root = h("div", "sl-widget sl-hidden");
  const seriesSelect = h("select", "sl-series");
  const unitInput = h("input", "sl-unit");
  unitInput.type = "number";
  unitInput.min = "0";
  const unitSlider = h("input", "sl-unit-slider");
  unitSlider.type = "range";
  unitSlider.min = "0";
  const controls = h("div", "sl-controls");
  controls.append(labelled("show", seriesSelect), labelled("unit", unitInput), unitSlider);
  const tokenRow = h("div", "sl-tokens");
  const readout = h("div", "sl-readout");
  const canvas = h("canvas", "sl-units");
  const topTitle = h("div", "sl-top-title");
  const topList = h("ol", "sl-top");
  const side = h("div", "sl-side");
  side.append(topTitle, topList);
  const panes = h("div", "sl-panes");
  const scroll = h("div", "sl-scroll");
  scroll.append(h("div", "sl-caption", "units (rows) × tokens (columns): click to pick"), canvas);
  panes.append(scroll, side);
  const legendSlot = h("div", "sl-legend-slot");
  root.append(controls, tokenRow, readout, panes, legendSlot);
  el.replaceChildren(root);

  const tokens = model.get("tokens");
  const size = model.get("hidden_size");
  const count = tokens.length;
  const colWidth = 14;
  const rowHeight = Math.max(1, Math.min(6, Math.floor(360 / Math.max(size, 1))));
  unitInput.max = unitSlider.max = String(size - 1);
  let series, values, color, chips;

  seriesSelect.replaceChildren(...model.get("series").map((s, k) => {
    const option = h("option", "", s.name);
    option.value = String(k);
    return option;
  }));

  function value(t, u) {
    return values[t * size + u];
  }

  function activity(v) {
    return series.rank === "abs" ? Math.abs(v) : v;
  }

  // Units in order of activity at token t (ties: lower unit first), as HiddenStateView.most_active.
  function mostActive(t, k) {
    const units = Array.from({ length: size }, (_, u) => u);
    units.sort((a, b) => activity(value(t, b)) - activity(value(t, a)) || a - b);
    return units.slice(0, k);
  }

  function drawSeries() {
    const index = model.get("series_index");
    series = model.get("series")[index];
    const all = floats(model.get("values"));
    values = all.subarray(index * count * size, (index + 1) * count * size);
    const stops = model.get("_colormaps")[series.cmap];
    color = colorScale(stops, series.vmin, series.vmax);
    seriesSelect.value = String(index);
    legendSlot.replaceChildren(legend(stops, series.vmin, series.vmax, series.name));
    chips = tokens.map((token, t) => {
      const chip = h("span", "sl-tok", token);
      chip.dataset.t = String(t);
      return chip;
    });
    tokenRow.replaceChildren(...chips);
    drawUnit();
  }

  function drawCanvas() {
    const unit = model.get("unit");
    const token = model.get("token");
    canvas.width = count * colWidth;
    canvas.height = size * rowHeight;
    canvas.style.width = `${canvas.width}px`;
    canvas.style.height = `${canvas.height}px`;
    const ctx = canvas.getContext("2d");
    for (let t = 0; t < count; t++) {
      for (let u = 0; u < size; u++) {
        ctx.fillStyle = color(value(t, u));
        ctx.fillRect(t * colWidth, u * rowHeight, colWidth, rowHeight);
      }
    }
    ctx.strokeStyle = "#d62728";
    ctx.lineWidth = 1;
    ctx.strokeRect(0.5, unit * rowHeight - 0.5, canvas.width - 1, rowHeight + 1);
    ctx.strokeStyle = "#000000";
    ctx.strokeRect(token * colWidth + 0.5, 0.5, colWidth - 1, canvas.height - 1);
  }

  function drawUnit() {
    const unit = model.get("unit");
    const token = model.get("token");
    unitInput.value = unitSlider.value = String(unit);
    chips.forEach((chip, t) => {
      const v = value(t, unit);
      chip.style.background = color(v);
      chip.title = `unit ${unit}: ${v.toFixed(3)}`;
      chip.classList.toggle("sl-active", t === token);
    });
    readout.textContent = `unit ${unit} at “${tokens[token]}”: ${value(token, unit).toFixed(3)}`;
    topTitle.textContent = `Units most active at “${tokens[token]}”`;
    topList.replaceChildren(...mostActive(token, model.get("top_k")).map((u) => {
      const v = value(token, u);
      const li = h("li", "sl-top-unit");
      li.dataset.unit = String(u);
      li.classList.toggle("sl-active", u === unit);
      const swatch = h("span", "sl-swatch");
      swatch.style.background = color(v);
      li.append(swatch, h("span", "sl-top-name", `unit ${u}`), h("span", "sl-top-value", v.toFixed(3)));
      return li;
    }));
    drawCanvas();
  }

  function set(name, v) {
    model.set(name, v);
    model.save_changes();
  }

  function setUnit(u) {
    if (Number.isInteger(u) && u >= 0 && u < size) set("unit", u);
  }

  seriesSelect.addEventListener("change", () => set("series_index", Number(seriesSelect.value)));
  unitInput.addEventListener("change", () => setUnit(Number(unitInput.value)));
  unitSlider.addEventListener("input", () => setUnit(Number(unitSlider.value)));
  tokenRow.addEventListener("mouseover", (event) => {
    const chip = event.target.closest(".sl-tok");
    if (chip) set("token", Number(chip.dataset.t));
  });
  topList.addEventListener("click", (event) => {
    const li = event.target.closest(".sl-top-unit");
    if (li) setUnit(Number(li.dataset.unit));
  });
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    setUnit(Math.floor((event.clientY - box.top) / rowHeight));
    set("token", Math.min(count - 1, Math.floor((event.clientX - box.left) / colWidth)));
  });

  drawSeries();
  return listen(model, { "change:series_index": drawSeries, "change:unit": drawUnit, "change:token": drawUnit,
    "change:top_k": drawUnit });
}

const VIEWS = { attention: renderAttention, hidden: renderHidden };

export default {
  render({ model, el }) {
    const kind = model.get("_kind");
    if (!(kind in VIEWS)) {
      el.replaceChildren(h("div", "sl-error", `seqlearn: unknown widget kind “${kind}”`));
      return undefined;
    }
    return VIEWS[kind](model, el);
  },
};
