"""What an application does through psycopg 3 (and psycopg2), with the drivers' defaults: autocommit
off (each first statement opens a transaction), psycopg 3 preparing a query server-side from its
fifth use (prepare_threshold 5). Usage: scenarios.py DRIVER SCENARIO, the connection string in the
environment variable PGRELAY_TEST_DSN; prints one JSON line of what the application saw (values
read, SQLSTATEs of the errors it caught)."""
import json
import os
import sys

driver, scenario = sys.argv[1], sys.argv[2]
dsn = os.environ["PGRELAY_TEST_DSN"]
values, errors = [], []

if driver == "psycopg2":
    import psycopg2

    conn = psycopg2.connect(dsn)
    if scenario == "read-transactions":
        for _ in range(5):
            cur = conn.cursor()
            for i in (1, 2, 3):
                cur.execute("SELECT v FROM py_items WHERE id = %s", (i,))
                values.append(cur.fetchone()[0])
            conn.commit()
    else:
        raise SystemExit(f"no scenario {scenario}")
    conn.close()
else:
    import psycopg

    with psycopg.connect(dsn) as conn:
        if scenario == "read-transactions":
            # seven transactions of three reads: past the fifth use the query is a prepared statement
            for _ in range(7):
                for i in (1, 2, 3):
                    values.append(conn.execute("SELECT v FROM py_items WHERE id = %s", (i,)).fetchone()[0])
                conn.commit()
        elif scenario == "nested-blocks":
            # transaction blocks (BEGIN, then SAVEPOINT for the inner one) that only read
            for _ in range(3):
                with conn.transaction():
                    with conn.transaction():
                        values.append(conn.execute("SELECT v FROM py_items WHERE id = %s", (4,)).fetchone()[0])
        elif scenario == "error-then-write":
            # a prepared statement first (so that the rollback of the inner block sends DEALLOCATE ALL)
            for _ in range(6):
                conn.execute("SELECT v FROM py_items WHERE id = %s", (5,)).fetchone()
            conn.commit()
            with conn.transaction():
                values.append(conn.execute("SELECT v FROM py_items WHERE id = %s", (5,)).fetchone()[0])
                try:
                    with conn.transaction():
                        conn.execute("SELECT v / (v - v) FROM py_items WHERE id = 5")
                except psycopg.Error as e:
                    errors.append(e.sqlstate)
                values.append(conn.execute("UPDATE py_items SET v = v + 1 WHERE id = 5").rowcount)
            values.append(conn.execute("SELECT v FROM py_items WHERE id = %s", (5,)).fetchone()[0])
            conn.commit()
        elif scenario == "rollback-and-rotation":
            # a rollback after prepared statements (DEALLOCATE ALL), then a statement cache of two
            # that rotates (DEALLOCATE name): the statements still answer
            for _ in range(6):
                conn.execute("SELECT v FROM py_items WHERE id = %s", (6,)).fetchone()
            conn.rollback()
            values.append(conn.execute("SELECT v FROM py_items WHERE id = %s", (6,)).fetchone()[0])
            conn.commit()
            conn.prepared_max = 2
            for k in range(4):
                for _ in range(6):
                    row = conn.execute(f"SELECT v + {k} FROM py_items WHERE id = %s", (7,)).fetchone()
                values.append(row[0])
            conn.commit()
        else:
            raise SystemExit(f"no scenario {scenario}")

print(json.dumps({"values": [str(v) for v in values], "errors": errors}))
