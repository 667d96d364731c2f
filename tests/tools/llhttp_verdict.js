// llhttp_verdict.js — Node's bundled llhttp (strict mode) as a reference:
// reads a JSON array of base64 requests on stdin, prints a JSON array of
// verdicts: {verdict: "accept"|"reject"|"incomplete", body: n, code}.
'use strict';
process.noDeprecation = true;
const { HTTPParser } = process.binding('http_parser');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = input.map((b64) => {
  const buf = Buffer.from(b64, 'base64');
  const p = new HTTPParser();
  p.initialize(HTTPParser.REQUEST, {});
  let complete = false, body = 0;
  p[HTTPParser.kOnHeaders] = () => {};
  p[HTTPParser.kOnHeadersComplete] = () => 0;
  p[HTTPParser.kOnBody] = (chunk) => { body += chunk.length; };
  p[HTTPParser.kOnMessageComplete] = () => { complete = true; };
  p[HTTPParser.kOnExecute] = () => {};
  const r = p.execute(buf);
  if (r instanceof Error) return { verdict: 'reject', code: r.code };
  return complete ? { verdict: 'accept', body } : { verdict: 'incomplete' };
});
process.stdout.write(JSON.stringify(out));
