// jwt.js — HS256 Bearer check for the node peers of bench/ws/run.sh
// (node's own crypto, no package): the same checks keel's fan-out route
// makes (signature, alg, exp/nbf when present, a subject). Returns the
// subject or null.
'use strict';
const crypto = require('crypto');
const secret = process.env.BENCH_JWT_SECRET || 'keel-bench-secret';

function verifyBearer(header) {
  if (typeof header !== 'string' || !/^Bearer /i.test(header)) return null;
  const parts = header.slice(7).trim().split('.');
  if (parts.length !== 3) return null;
  const mac = crypto.createHmac('sha256', secret).update(parts[0] + '.' + parts[1]).digest();
  const sig = Buffer.from(parts[2], 'base64url');
  if (sig.length !== mac.length || !crypto.timingSafeEqual(sig, mac)) return null;
  let head, claims;
  try {
    head = JSON.parse(Buffer.from(parts[0], 'base64url'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch (e) {
    return null;
  }
  if (!head || head.alg !== 'HS256' || !claims || typeof claims.sub !== 'string' || !claims.sub) return null;
  const now = Date.now() / 1000;
  if (typeof claims.exp === 'number' && now >= claims.exp) return null;
  if (typeof claims.nbf === 'number' && now < claims.nbf) return null;
  return claims.sub;
}

module.exports = { verifyBearer };
