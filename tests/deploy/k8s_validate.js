// Validates the Kubernetes manifests of deploy/k8s against the Kubernetes
// OpenAPI schema, as compiled by the npm package kubernetes-models (every
// kind's JSON Schema: types, required fields, enums, formats). Follows
// each kustomization.yaml's resources (bases, overlays) and checks the
// kustomization files themselves. Usage: node k8s_validate.js DIR...
// NODE_PATH must lead to kubernetes-models and js-yaml (scripts/lint_deploy.sh).
"use strict";
const fs = require("fs");
const path = require("path");
const yaml = require("js-yaml");

let failures = 0;
let checked = 0;
const seen = new Set();

function fail(file, msg) {
    console.error(`${file}: ${msg}`);
    failures++;
}

function modelFor(apiVersion, kind) {
    // "apps/v1" -> kubernetes-models/apps/v1/Deployment; "v1" -> kubernetes-models/v1/Service
    const mod = `kubernetes-models/${apiVersion}/${kind}`;
    try {
        return require(mod)[kind];
    } catch (e) {
        return null;
    }
}

function checkObject(file, doc, index) {
    const where = `${file}#${index}`;
    if (!doc || typeof doc !== "object") return fail(where, "not a mapping");
    if (!doc.apiVersion || !doc.kind) return fail(where, "apiVersion and kind are required");
    if (!doc.metadata || !doc.metadata.name) return fail(where, "metadata.name is required");
    const Model = modelFor(doc.apiVersion, doc.kind);
    if (!Model) return fail(where, `unknown kind ${doc.apiVersion}/${doc.kind}`);
    try {
        new Model(doc).validate();
        checked++;
    } catch (e) {
        fail(where, `${doc.kind} ${doc.metadata.name}: ${e.message}`);
    }
}

function checkKustomization(dir) {
    const real = fs.realpathSync(dir);
    if (seen.has(real)) return;
    seen.add(real);
    const kfile = path.join(dir, "kustomization.yaml");
    if (!fs.existsSync(kfile)) return fail(dir, "no kustomization.yaml");
    const k = yaml.load(fs.readFileSync(kfile, "utf8"));
    if (k.apiVersion !== "kustomize.config.k8s.io/v1beta1" || k.kind !== "Kustomization")
        fail(kfile, "apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization");
    const known = new Set(["apiVersion", "kind", "resources", "namespace", "labels",
        "commonLabels", "commonAnnotations", "images", "patches", "configMapGenerator",
        "secretGenerator", "replicas", "namePrefix", "nameSuffix", "components"]);
    for (const key of Object.keys(k))
        if (!known.has(key)) fail(kfile, `unknown kustomization field "${key}"`);
    for (const r of k.resources || []) {
        const p = path.join(dir, r);
        if (!fs.existsSync(p)) { fail(kfile, `resource ${r} does not exist`); continue; }
        if (fs.statSync(p).isDirectory()) { checkKustomization(p); continue; }
        const docs = yaml.loadAll(fs.readFileSync(p, "utf8")).filter((d) => d !== null);
        if (docs.length === 0) fail(p, "no objects");
        docs.forEach((d, i) => checkObject(p, d, i));
    }
    for (const patch of k.patches || []) {
        if (!patch.target || !(patch.patch || patch.path))
            fail(kfile, "a patch needs a target and a patch or path");
        if (patch.patch && /^\s*- op:/.test(patch.patch)) {
            const ops = yaml.load(patch.patch);
            for (const op of ops)
                if (!["add", "remove", "replace", "move", "copy", "test"].includes(op.op) || !op.path)
                    fail(kfile, `invalid JSON patch operation ${JSON.stringify(op)}`);
        }
    }
}

for (const dir of process.argv.slice(2)) checkKustomization(dir);
if (failures) {
    console.error(`k8s: ${failures} problem(s)`);
    process.exit(1);
}
console.log(`k8s: ${checked} objects valid against the Kubernetes schema`);
