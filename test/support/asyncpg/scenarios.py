"""Scenarios an application runs with asyncpg (Debian's python3-asyncpg) and its defaults: every
query a named prepared statement of its statement cache, transactions as BEGIN / COMMIT simple
Queries, cursors as named portals read in parts. Run by test/integration/driver-psycopg.test.ts:
`python3 scenarios.py NAME` with PGRELAY_TEST_DSN set; prints one JSON line, the values the
application saw and the SQLSTATEs of the errors it got."""
import asyncio
import json
import os
import sys

import asyncpg

READ = 'SELECT v FROM py_items WHERE id = $1'


async def main(name):
    dsn = os.environ['PGRELAY_TEST_DSN']
    values, errors = [], []
    conn = await asyncpg.connect(dsn)
    try:
        if name == 'read-transactions':
            # five transactions that only read, three reads each; one REPEATABLE READ, READ ONLY
            for _ in range(5):
                async with conn.transaction():
                    for k in (1, 2, 3):
                        values.append(await conn.fetchval(READ, k))
            async with conn.transaction(isolation='repeatable_read', readonly=True):
                values.append(await conn.fetchval(READ, 4))
        elif name == 'cursor-then-write':
            # a cursor read in part, a write (the transaction moves), the cursor read on
            async with conn.transaction():
                cursor = await conn.cursor('SELECT id FROM py_items ORDER BY id')
                values.extend(r['id'] for r in await cursor.fetch(5))
                await conn.execute('UPDATE py_items SET v = v + 1 WHERE id = $1', 9)
                values.extend(r['id'] for r in await cursor.fetch(5))
            values.append(await conn.fetchval(READ, 9))
        elif name == 'pool-reads':
            pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
            try:
                got = await asyncio.gather(*[pool.fetchval(READ, 1 + i % 3) for i in range(60)])
                values.extend(sorted(set(got)))
            finally:
                await pool.close()
        elif name == 'error-in-transaction':
            try:
                async with conn.transaction():
                    values.append(await conn.fetchval(READ, 7))
                    await conn.fetchval('SELECT 1 / 0')
            except asyncpg.PostgresError as e:
                errors.append(e.sqlstate)
            values.append(await conn.fetchval(READ, 7))
        else:
            raise SystemExit(f'no scenario {name}')
    finally:
        await conn.close()
    print(json.dumps({'values': [str(v) for v in values], 'errors': errors}))


asyncio.run(main(sys.argv[1]))
