// Bundles the browser page's script (page/app.mjs and its npm dependencies) with esbuild:
// `node bundle.mjs '{"outfile": PATH}'`. The browser test runs it into a temp folder,
// so the page is always built from the sources it tests.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";

const { outfile } = JSON.parse(process.argv[2] ?? "{}");
if (!outfile) {
  process.stderr.write('usage: node bundle.mjs \'{"outfile": PATH}\'\n');
  process.exit(2);
}
await build({
  entryPoints: [fileURLToPath(new URL("./page/app.mjs", import.meta.url))],
  bundle: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  outfile,
  logLevel: "warning",
});
