import { describe, expect, it } from 'vitest';
import { saslprep } from '../../src/auth/saslprep.js';
import { makeScramSecret, parseScramVerifier } from '../../src/auth/scram.js';

describe('saslprep', () => {
  it('leaves ASCII alone, control characters included (as PostgreSQL does)', () => {
    expect(saslprep('pencil')).toBe('pencil');
    expect(saslprep('a\u0007b\tc ')).toBe('a\u0007b\tc ');
    expect(saslprep('')).toBe('');
  });

  it('maps non-ASCII spaces to a space, removes B.1 characters, normalizes NFKC', () => {
    expect(saslprep('a\u00a0b\u2003c')).toBe('a b c');
    expect(saslprep('pass\u00adword')).toBe('password');
    expect(saslprep('\u2168')).toBe('IX');
    expect(saslprep('\ufb01\uff50')).toBe('fip');
    expect(saslprep('e\u0301')).toBe('\u00e9');
  });

  it('falls back to the raw password when it cannot be prepared', () => {
    expect(saslprep('\u00e9\u0007')).toBe('\u00e9\u0007'); // prohibited control character
    expect(saslprep('\u00e9\ue000')).toBe('\u00e9\ue000'); // private use
    expect(saslprep('\u00e9\ud800')).toBe('\u00e9\ud800'); // lone surrogate
    expect(saslprep('\u00ad\u034f')).toBe('\u00ad\u034f'); // empty after mapping
  });
});

describe('saslprep agrees with PostgreSQL', () => {
  // Verifiers from PostgreSQL 15: CREATE ROLE … PASSWORD '<password>' (password_encryption = scram-sha-256).
  const cases: [string, string][] = [
    ['\u2168 p\u00e4ssw\u00f6rd', 'SCRAM-SHA-256$4096:D+TOMwzn7S28Wbd9cYZC9A==$whLZcb3BmzybKIuiTPKBF1cyDIdD6iiA4KL2nsUREo4=:ZoXMV3qfrPnc5fOVwiKa5J5xw1j/NQTI5uRd+3Yi6TY='],
    ['a\u00a0b\u2003c', 'SCRAM-SHA-256$4096:2s9sLTQr4NQVY0u57cS1IQ==$NyGnm/3twE3UWlGM65iPAaCetHj1WC/t7iclg9h1UKI=:QI3sRpYe766oqXz7NG6uwXXWbtgi3TTPgDWK+7c1ib8='],
    ['pass\u00adword\u200b!', 'SCRAM-SHA-256$4096:AiSrhaGg6WqS1VvE/WmwVA==$PVSa/XoRmujhvhK6ewv9fbByyS7fCUibdPxXaNJTt8Y=:uWnSmN99/u+G+OX9cXFIChKwVeWlHxiLphyYjjee7iQ='],
    ['\ufb01sh\uff50\uff41\uff53\uff53', 'SCRAM-SHA-256$4096:6c5PQiC7jAlT9rxMrv3HHg==$yKGfSlLzrjRMgym66Jo1NTXFiX+F8Sh+TnvfdlRAzG4=:yJGQYzdv3MlJCmWwh1fZHNGQ7uYZ4nT/lyrkY/f7Zqc='],
    ['\u00e9t\u00e9\u0007', 'SCRAM-SHA-256$4096:Ay/LYenSX0781XjDdTKsSQ==$tPbKKvHDBbfitU5DRNolKeM7dbNg1RA3zc2Xgqf7bms=:tE3bzY+5l8TNWg/TyrTSdbP8dQHuyuZDldgrA9eyThQ='],
    ['e\u0301cole', 'SCRAM-SHA-256$4096:F6MFJ4CJasTCdrIXbuTxYg==$ERHHY2oSSRxi/7DThz8ZJgTNKBefEkH7bDfyoa1W3Ro=:9cjlF/L5EKlBYL+CZFLbbYqmlXXyyUMjLU1cKDdiua4='],
    ['\u00ad\u200b', 'SCRAM-SHA-256$4096:Z5ZzzDagpVAqfRl376QbJA==$ClIkNWtCVE4qAuh5SDCtf9aR5rfW/4ktZO3N6WdXZXM=:CyNQn6npQgkuHd83wF0wJmmSFV8vJgZilf0tn6iiWsI='],
    ['\u00ad\u034f', 'SCRAM-SHA-256$4096:ouhNu04cHnec2vJg+UbxuA==$aDhoabXDqB9iilfjknL8XuDMepQmwSJFOgkWJcXVuQU=:xOs9p73NKeeqH1W33LMtxZdL539X1JCm2v4EgFE1dn4='],
  ];

  it.each(cases)('derives the same keys as PostgreSQL for %j', (password, verifier) => {
    const secret = parseScramVerifier(verifier)!;
    expect(makeScramSecret(password, { salt: secret.salt, iterations: secret.iterations })).toEqual(secret);
  });
});
