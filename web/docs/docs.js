/* docs.js — renders /openapi.json: every operation with its method, path,
 * summary, parameters, request body and responses. Vanilla JS, no
 * dependencies, nothing fetched but /openapi.json; text only goes through
 * textContent (never innerHTML), so the document cannot inject markup. */
"use strict";

(function () {
  var spec = null;

  /* Counted for tests: the page must work under its own CSP. */
  document.documentElement.dataset.cspViolations = "0";
  document.addEventListener("securitypolicyviolation", function (e) {
    var d = document.documentElement.dataset;
    d.cspViolations = String(Number(d.cspViolations) + 1);
    d.cspLast = e.violatedDirective + " " + e.blockedURI;
  });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function resolve(s) {
    var seen = 0;
    while (s && typeof s === "object" && typeof s.$ref === "string" && seen++ < 16) {
      var parts = s.$ref.replace(/^#\//, "").split("/");
      var cur = spec;
      for (var i = 0; i < parts.length && cur; i++)
        cur = cur[parts[i].replace(/~1/g, "/").replace(/~0/g, "~")];
      if (!cur) break;
      s = cur;
    }
    return s;
  }

  function refName(s) {
    return s && typeof s.$ref === "string" ? s.$ref.split("/").pop() : null;
  }

  function typeText(s) {
    if (s === true) return "any";
    if (s === false) return "nothing";
    if (!s || typeof s !== "object") return "any";
    var t = s.type;
    if (Array.isArray(t)) t = t.join(" | ");
    if (!t) t = s.properties ? "object" : s.items ? "array" : "any";
    if (t === "array" && s.items) t = "array of " + typeText(resolve(s.items));
    return t;
  }

  var CONSTRAINTS = ["format", "pattern", "minLength", "maxLength", "minimum", "maximum",
                     "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems",
                     "default"];

  function constraintText(s) {
    if (!s || typeof s !== "object") return "";
    var out = [];
    CONSTRAINTS.forEach(function (k) {
      if (s[k] !== undefined) out.push(k + ": " + JSON.stringify(s[k]));
    });
    if (Array.isArray(s.enum)) out.push("one of " + s.enum.map(function (v) {
      return JSON.stringify(v);
    }).join(", "));
    if (s.const !== undefined) out.push("= " + JSON.stringify(s.const));
    if (s.additionalProperties === false) out.push("no other members");
    return out.join("; ");
  }

  /* One schema as a nested list: name, type, required, constraints. */
  function schemaNode(name, s, required, depth) {
    var li = el("li");
    var shown = resolve(s);
    if (name !== null) {
      li.appendChild(el("span", "name", name));
      if (required) li.appendChild(el("span", "req", "*"));
      li.appendChild(document.createTextNode(" "));
    }
    var label = refName(s) ? refName(s) + " (" + typeText(shown) + ")" : typeText(shown);
    li.appendChild(el("span", "type", label));
    var c = constraintText(shown);
    if (c) li.appendChild(el("span", "constraint", " — " + c));
    if (shown && shown.description)
      li.appendChild(el("span", "constraint", " — " + shown.description));
    /* a named component is listed once, under Schemas */
    if (depth > 8 || !shown || typeof shown !== "object" || refName(s)) return li;
    var kids = el("ul");
    var req = Array.isArray(shown.required) ? shown.required : [];
    if (shown.properties)
      Object.keys(shown.properties).forEach(function (k) {
        kids.appendChild(schemaNode(k, shown.properties[k], req.indexOf(k) >= 0, depth + 1));
      });
    if (shown.additionalProperties && typeof shown.additionalProperties === "object")
      kids.appendChild(schemaNode("[other members]", shown.additionalProperties, false, depth + 1));
    var items = shown.items ? resolve(shown.items) : null;
    if (items && typeof items === "object" && (items.properties || items.items))
      kids.appendChild(schemaNode("[item]", shown.items, false, depth + 1));
    if (kids.childNodes.length) li.appendChild(kids);
    return li;
  }

  function schemaBlock(s) {
    var div = el("div", "schema");
    var ul = el("ul");
    ul.appendChild(schemaNode(null, s, false, 0));
    div.appendChild(ul);
    return div;
  }

  function parametersTable(params) {
    var t = el("table");
    var head = el("tr");
    ["name", "in", "required", "schema"].forEach(function (h) { head.appendChild(el("th", null, h)); });
    t.appendChild(head);
    params.forEach(function (p) {
      p = resolve(p);
      var tr = el("tr");
      tr.appendChild(el("td", "path", p.name));
      tr.appendChild(el("td", null, p.in));
      tr.appendChild(el("td", null, p.required ? "yes" : "no"));
      var td = el("td");
      var s = resolve(p.schema) || {};
      td.appendChild(el("span", "type", typeText(s)));
      var c = constraintText(s);
      if (c) td.appendChild(el("span", "constraint", " — " + c));
      if (p.description) td.appendChild(el("div", "constraint", p.description));
      tr.appendChild(td);
      t.appendChild(tr);
    });
    return t;
  }

  function contentBlocks(parent, content) {
    Object.keys(content || {}).forEach(function (mt) {
      parent.appendChild(el("div", "meta", mt));
      if (content[mt].schema) parent.appendChild(schemaBlock(content[mt].schema));
    });
  }

  function securityText(op) {
    var sec = op.security !== undefined ? op.security : spec.security;
    if (!sec || !sec.length) return "public";
    return sec.map(function (req) {
      return Object.keys(req).map(function (k) {
        return k + (req[k].length ? " (" + req[k].join(", ") + ")" : "");
      }).join(" + ");
    }).join(" or ");
  }

  function operation(path, method, op) {
    var d = el("details", "op");
    d.dataset.search = (method + " " + path + " " + (op.operationId || "") + " " +
                        (op.summary || "")).toLowerCase();
    var s = el("summary");
    var known = ["get", "post", "put", "patch", "delete"].indexOf(method) >= 0;
    s.appendChild(el("span", "method " + (known ? "m-" + method : "m-other"), method));
    s.appendChild(el("span", "path", path));
    if (op.summary) s.appendChild(el("span", "summary", op.summary));
    d.appendChild(s);
    var b = el("div", "body");
    b.appendChild(el("div", "meta", "operationId: " + (op.operationId || "-") +
                     " · security: " + securityText(op)));
    if (op.parameters && op.parameters.length) {
      b.appendChild(el("h3", null, "Parameters"));
      b.appendChild(parametersTable(op.parameters));
    }
    if (op.requestBody) {
      var rb = resolve(op.requestBody);
      b.appendChild(el("h3", null, "Request body" + (rb.required ? " (required)" : "")));
      contentBlocks(b, rb.content);
    }
    b.appendChild(el("h3", null, "Responses"));
    var t = el("table");
    Object.keys(op.responses || {}).forEach(function (code) {
      var r = resolve(op.responses[code]);
      var tr = el("tr");
      tr.appendChild(el("td", "path", code));
      var td = el("td", null, r.description || "");
      if (r.content) contentBlocks(td, r.content);
      tr.appendChild(td);
      t.appendChild(tr);
    });
    b.appendChild(t);
    d.appendChild(b);
    return d;
  }

  function render() {
    var info = spec.info || {};
    document.title = (info.title || "API") + " — API documentation";
    document.getElementById("title").textContent = info.title || "API";
    document.getElementById("version").textContent =
      "version " + (info.version || "?") + " · OpenAPI " + (spec.openapi || "?");
    document.getElementById("description").textContent = info.description || "";
    var main = document.getElementById("operations");
    main.textContent = "";
    var byTag = {};
    var order = [];
    Object.keys(spec.paths || {}).forEach(function (path) {
      var item = spec.paths[path];
      ["get", "put", "post", "delete", "options", "head", "patch", "trace"].forEach(function (m) {
        if (!item[m]) return;
        var tag = (item[m].tags && item[m].tags[0]) || "default";
        if (!byTag[tag]) { byTag[tag] = []; order.push(tag); }
        byTag[tag].push(operation(path, m, item[m]));
      });
    });
    var count = 0;
    order.forEach(function (tag) {
      var section = el("section", "tag-section");
      section.appendChild(el("h2", "tag", tag));
      byTag[tag].forEach(function (d) { section.appendChild(d); count++; });
      main.appendChild(section);
    });
    var schemas = (spec.components && spec.components.schemas) || {};
    if (Object.keys(schemas).length) {
      var sec = el("section", "schemas");
      sec.appendChild(el("h2", "tag", "Schemas"));
      Object.keys(schemas).forEach(function (name) {
        var d = el("details", "op");
        var s = el("summary");
        s.appendChild(el("span", "path", name));
        d.appendChild(s);
        var body = el("div", "body");
        body.appendChild(schemaBlock(schemas[name]));
        d.appendChild(body);
        sec.appendChild(d);
      });
      main.appendChild(sec);
    }
    main.dataset.operations = String(count);
    /* for tests: the style sheet applied (CSP style-src 'self') */
    var fg = getComputedStyle(document.documentElement).getPropertyValue("--fg");
    main.dataset.css = fg.trim() ? "loaded" : "missing";
    document.getElementById("filter").addEventListener("input", filter);
  }

  function filter(ev) {
    var q = ev.target.value.trim().toLowerCase();
    document.querySelectorAll("section.tag-section").forEach(function (sec) {
      var any = false;
      sec.querySelectorAll("details.op").forEach(function (d) {
        var hit = !q || d.dataset.search.indexOf(q) >= 0;
        d.classList.toggle("hidden", !hit);
        any = any || hit;
      });
      sec.classList.toggle("hidden", !any);
    });
  }

  function fail(msg) {
    var st = document.getElementById("status");
    if (st) { st.className = "error"; st.textContent = msg; }
  }

  fetch("/openapi.json", { headers: { Accept: "application/json" } })
    .then(function (r) {
      if (!r.ok) throw new Error("GET /openapi.json: HTTP " + r.status);
      return r.json();
    })
    .then(function (doc) { spec = doc; render(); })
    .catch(function (e) { fail("Could not load the API description: " + e.message); });
})();
