// After tsc: marks the one ioredis import of the emitted typings @ts-ignore (tsc drops comments
// there), so an app without ioredis type-checks them with skipLibCheck false; with ioredis, the
// real types. Fails the build when the import is not where lib/storage/ioredis-types.ts puts it.
//   node scripts/typings-without-ioredis.js [distDir]
const fs = require('node:fs');
const path = require('node:path');

const file = path.join(process.argv[2] || 'dist', 'storage', 'ioredis-types.d.ts');
const text = fs.readFileSync(file, 'utf8');
const importLine = /^import type \{[^}]*\} from 'ioredis';$/m;
if (!importLine.test(text)) {
  console.error(`${file}: no "import type { … } from 'ioredis';" line to mark`);
  process.exit(1);
}
const marked = '// @ts-ignore ioredis is an optional peer; without it these types are any\n';
if (!text.includes(marked))
  fs.writeFileSync(
    file,
    text.replace(importLine, (line) => marked + line),
  );
