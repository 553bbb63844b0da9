// A small markdown renderer that builds DOM nodes only (createElement + textContent).
// Model and user text is data, never markup: there is no HTML sink here, so raw HTML,
// images and non-http(s) links all stay literal text. The page's CSP (Trusted Types 'none')
// would make any innerHTML throw anyway.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const HR = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])(?:[ \t]+|$)/;
const TABLE_SEP = /^ *\|? *:?-+:? *(?:\| *:?-+:? *)*\|? *$/;

function h(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- inline ------------------------------------------------------------------------------

function safeUrl(href) {
  try {
    const url = new URL(href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function link(url, children) {
  const a = h("a");
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.append(...children);
  return a;
}

// Finds the closing delimiter `delim` from `from`, skipping code spans; -1 when none.
function findClose(s, delim, from) {
  for (let i = from; i < s.length; i++) {
    const c = s[i];
    if (c === "\\") { i++; continue; }
    if (c === "`") {
      const run = s.slice(i).match(/^`+/)[0];
      const end = s.indexOf(run, i + run.length);
      if (end > 0) { i = end + run.length - 1; continue; }
    }
    if (s.startsWith(delim, i)) {
      if (delim.length === 1 && s[i + 1] === delim) { i++; continue; }
      if (i > from && !/\s/.test(s[i - 1])) return i;
    }
  }
  return -1;
}

const ESCAPABLE = /[\\`*_{}[\]()#+\-.!|~<>"']/;

export function inline(s) {
  const out = [];
  let text = "";
  const flush = () => { if (text) { out.push(document.createTextNode(text)); text = ""; } };
  const push = (node) => { flush(); out.push(node); };
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    const rest = s.slice(i);
    if (c === "\\" && ESCAPABLE.test(s[i + 1] || "")) { text += s[i + 1]; i += 2; continue; }
    if (c === "\n") { push(h("br")); i++; continue; }
    if (c === "`") {
      const run = rest.match(/^`+/)[0];
      const end = s.indexOf(run, i + run.length);
      if (end > 0) {
        let code = s.slice(i + run.length, end).replace(/\n/g, " ");
        if (/^ .*[^ ].* $/.test(code)) code = code.slice(1, -1);
        push(h("code", null, code));
        i = end + run.length;
        continue;
      }
      text += run; i += run.length; continue;
    }
    if (c === "!" && s[i + 1] === "[") {
      // Images are never loaded: the whole ![alt](src) stays as typed.
      const m = rest.match(/^!\[[^\]\n]*\]\([^)\s]*(?:\s+"[^"]*")?\)/);
      if (m) { text += m[0]; i += m[0].length; continue; }
    }
    if (c === "[") {
      const m = rest.match(/^\[((?:\\.|`[^`]*`|[^\]\\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/);
      if (m) {
        const url = safeUrl(m[2]);
        if (url) { push(link(url, inline(m[1]))); i += m[0].length; continue; }
        text += m[0]; i += m[0].length; continue;
      }
    }
    if (c === "<") {
      const m = rest.match(/^<(https?:\/\/[^\s<>]+)>/);
      if (m && safeUrl(m[1])) { push(link(safeUrl(m[1]), [m[1]])); i += m[0].length; continue; }
    }
    if ((c === "h") && /^https?:\/\//.test(rest) && !/[\w/]$/.test(text)) {
      let m = rest.match(/^https?:\/\/[^\s<>"]+/)[0];
      m = m.replace(/[.,;:!?'")\]*_]+$/, "");
      const url = safeUrl(m);
      if (url && m.length > 8) { push(link(url, [m])); i += m.length; continue; }
    }
    if (c === "*" || c === "_" || c === "~") {
      const double = s[i + 1] === c;
      const delim = double ? c + c : c;
      const after = s[i + delim.length] || "";
      const before = i > 0 ? s[i - 1] : " ";
      // `_` inside words (snake_case) is not emphasis; `~` only strikes when doubled.
      const opens = after && !/\s/.test(after) && !(c === "_" && /\w/.test(before)) && (c !== "~" || double);
      if (opens) {
        const end = findClose(s, delim, i + delim.length);
        if (end > 0 && !(c === "_" && /\w/.test(s[end + delim.length] || ""))) {
          const tag = c === "~" ? "del" : double ? "strong" : "em";
          const node = h(tag);
          node.append(...inline(s.slice(i + delim.length, end)));
          push(node);
          i = end + delim.length;
          continue;
        }
      }
      text += delim; i += delim.length; continue;
    }
    text += c; i++;
  }
  flush();
  return out;
}

// ---- blocks ------------------------------------------------------------------------------

function indentOf(line) {
  return line.match(/^ */)[0].length;
}

function startsBlock(line, next) {
  return FENCE.test(line) || HEADING.test(line) || HR.test(line) || QUOTE.test(line)
    || ITEM.test(line) && /\S/.test(line.replace(ITEM, "")) || isTableStart(line, next);
}

function isTableStart(line, next) {
  return next !== undefined && line.includes("|") && TABLE_SEP.test(next) && next.includes("-");
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  const cells = [];
  let cur = "";
  let code = false;
  for (let i = 0; i < row.length; i++) {
    const c = row[i];
    if (c === "\\" && row[i + 1] === "|") { cur += "|"; i++; continue; }
    if (c === "`") code = !code;
    if (c === "|" && !code) { cells.push(cur.trim()); cur = ""; continue; }
    cur += c;
  }
  cells.push(cur.trim());
  return cells;
}

// Splits lines into blocks: [{type, src, ...}] where src is the block's own text, so a
// renderer can reuse the DOM of any block whose src did not change.
export function parseBlocks(lines) {
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!/\S/.test(line)) { i++; continue; }
    const start = i;
    let m;
    if ((m = line.match(FENCE))) {
      const fence = m[1];
      const indent = indentOf(line);
      const body = [];
      i++;
      let closed = false;
      while (i < lines.length) {
        const l = lines[i];
        if (l.trim().startsWith(fence[0].repeat(fence.length)) && /^ {0,3}[`~]+\s*$/.test(l)) { closed = true; i++; break; }
        body.push(l.replace(new RegExp("^ {0," + indent + "}"), ""));
        i++;
      }
      blocks.push({ type: "code", lang: m[2], code: body.join("\n"), closed, src: lines.slice(start, i).join("\n") });
      continue;
    }
    if ((m = line.match(HEADING))) {
      blocks.push({ type: "heading", level: m[1].length, text: m[2] || "", src: line });
      i++;
      continue;
    }
    if (HR.test(line)) { blocks.push({ type: "hr", src: line }); i++; continue; }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && /\S/.test(lines[i])) {
        if (QUOTE.test(lines[i])) body.push(lines[i].replace(QUOTE, ""));
        else if (body.length && !startsBlock(lines[i], lines[i + 1])) body.push(lines[i]);
        else break;
        i++;
      }
      blocks.push({ type: "quote", lines: body, src: lines.slice(start, i).join("\n") });
      continue;
    }
    if (isTableStart(line, lines[i + 1])) {
      const head = splitRow(line);
      const aligns = splitRow(lines[i + 1]).map((c) =>
        c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "");
      const rows = [];
      i += 2;
      while (i < lines.length && /\S/.test(lines[i]) && lines[i].includes("|")) { rows.push(splitRow(lines[i])); i++; }
      blocks.push({ type: "table", head, aligns, rows, src: lines.slice(start, i).join("\n") });
      continue;
    }
    if ((m = line.match(ITEM))) {
      const ordered = /\d/.test(m[2]);
      const items = [];
      let loose = false;
      while (i < lines.length) {
        const im = lines[i].match(ITEM);
        if (!im || /\d/.test(im[2]) !== ordered) break;
        const markerIndent = im[1].length;
        const contentIndent = im[0].length;
        const body = [lines[i].slice(contentIndent)];
        const itemStart = items.length === 0 ? Number.parseInt(im[2], 10) : null;
        i++;
        while (i < lines.length) {
          const l = lines[i];
          if (!/\S/.test(l)) {
            // A blank line continues the item only if indented content follows.
            let j = i + 1;
            while (j < lines.length && !/\S/.test(lines[j])) j++;
            if (j < lines.length && indentOf(lines[j]) >= Math.min(contentIndent, markerIndent + 2)) {
              body.push("");
              loose = true;
              i++;
              continue;
            }
            break;
          }
          const ind = indentOf(l);
          if (ind >= Math.min(contentIndent, markerIndent + 2)) { body.push(l.slice(Math.min(ind, contentIndent))); i++; continue; }
          if (ITEM.test(l) || startsBlock(l, lines[i + 1])) break;
          if (body[body.length - 1] === "") break;
          body.push(l); // lazy continuation of the item's paragraph
          i++;
        }
        items.push(body);
        if (itemStart !== null) items.start = itemStart;
        // A blank line between items makes the list loose.
        if (i < lines.length && !/\S/.test(lines[i])) {
          let j = i;
          while (j < lines.length && !/\S/.test(lines[j])) j++;
          const nm = j < lines.length && lines[j].match(ITEM);
          if (nm && /\d/.test(nm[2]) === ordered && nm[1].length <= markerIndent + 1) { loose = true; i = j; continue; }
          break;
        }
      }
      while (i > start && !/\S/.test(lines[i - 1])) i--;
      blocks.push({ type: "list", ordered, start: items.start, items, loose, src: lines.slice(start, i).join("\n") });
      continue;
    }
    const para = [line];
    i++;
    while (i < lines.length && /\S/.test(lines[i]) && !startsBlock(lines[i], lines[i + 1])) { para.push(lines[i]); i++; }
    // A paragraph line followed by a table separator is really a table header.
    if (i < lines.length && isTableStart(lines[i - 1], lines[i]) && para.length > 1) { para.pop(); i--; }
    blocks.push({ type: "para", text: para.map((l) => l.trim()).join("\n"), src: para.join("\n") });
  }
  return blocks;
}

function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text).catch(() => legacyCopy(text));
  }
  return Promise.resolve(legacyCopy(text));
}

function legacyCopy(text) {
  const area = h("textarea", "offscreen");
  area.value = text;
  area.setAttribute("readonly", "");
  area.setAttribute("aria-hidden", "true");
  document.body.append(area);
  area.select();
  try { document.execCommand("copy"); } finally { area.remove(); }
}

function codeBlock(block) {
  const wrap = h("div", "codeblock");
  const bar = h("div", "codebar");
  const lang = h("span", "lang", block.lang || "code");
  const done = h("span", "copied");
  done.setAttribute("role", "status");
  const btn = h("button", "copy", "Copy");
  btn.type = "button";
  const pre = h("pre");
  const code = h("code", null, block.code);
  if (block.lang) code.className = "language-" + block.lang.replace(/[^\w-]/g, "");
  btn.addEventListener("click", () => {
    copyText(code.textContent).then(() => {
      done.textContent = "Copied";
      setTimeout(() => { done.textContent = ""; }, 1500);
    });
  });
  bar.append(lang, done, btn);
  pre.append(code);
  wrap.append(bar, pre);
  return wrap;
}

function renderBlock(block, tight) {
  switch (block.type) {
    case "code": return codeBlock(block);
    case "heading": { const n = h("h" + block.level); n.append(...inline(block.text)); return n; }
    case "hr": return h("hr");
    case "quote": { const n = h("blockquote"); for (const b of parseBlocks(block.lines)) n.append(renderBlock(b)); return n; }
    case "table": {
      const wrap = h("div", "tablewrap");
      const table = h("table");
      const thead = h("thead");
      const tr = h("tr");
      block.head.forEach((cell, k) => {
        const th = h("th");
        if (block.aligns[k]) th.className = "align-" + block.aligns[k];
        th.append(...inline(cell));
        tr.append(th);
      });
      thead.append(tr);
      const tbody = h("tbody");
      for (const row of block.rows) {
        const r = h("tr");
        block.head.forEach((_, k) => {
          const td = h("td");
          if (block.aligns[k]) td.className = "align-" + block.aligns[k];
          td.append(...inline(row[k] || ""));
          r.append(td);
        });
        tbody.append(r);
      }
      table.append(thead, tbody);
      wrap.append(table);
      return wrap;
    }
    case "list": {
      const n = h(block.ordered ? "ol" : "ul");
      if (block.ordered && block.start !== undefined && block.start !== 1) n.start = block.start;
      for (const item of block.items) {
        const li = h("li");
        for (const b of parseBlocks(item)) li.append(renderBlock(b, !block.loose));
        n.append(li);
      }
      return n;
    }
    default: {
      if (tight) { const span = h("span", "tight"); span.append(...inline(block.text)); return span; }
      const p = h("p");
      p.append(...inline(block.text));
      return p;
    }
  }
}

// Renders `text` into `container` once (replacing what it held).
export function render(text, container) {
  createRenderer(container).update(text);
}

// A renderer for streamed text: each update re-parses the text (cheap string work) but only
// rebuilds the DOM of blocks whose source changed, in practice the last, still-open block.
export function createRenderer(container) {
  let done = [];
  container.replaceChildren();
  return {
    update(text) {
      const blocks = parseBlocks(String(text).replace(/\r\n?/g, "\n").split("\n"));
      let k = 0;
      while (k < blocks.length && k < done.length && done[k].src === blocks[k].src) k++;
      for (let j = done.length - 1; j >= k; j--) done[j].node.remove();
      done = done.slice(0, k);
      for (; k < blocks.length; k++) {
        const node = renderBlock(blocks[k]);
        container.append(node);
        done.push({ src: blocks[k].src, node });
      }
    },
  };
}
