// Scenarios an application runs with pgx (Debian's golang-github-jackc-pgx-v4-dev) and its
// defaults: every query is prepared (a named statement from pgx's statement cache, Parse and
// Describe in a round trip of their own, then Bind/Execute/Sync), Begin sends "begin" as a simple
// Query, a batch is several Bind/Execute under one Sync. Run by
// test/integration/driver-pgx.test.ts: `scenarios NAME` with PGRELAY_TEST_DSN set; prints one
// JSON line, the values the application saw and the SQLSTATEs of the errors it got.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

type outcome struct {
	Values []string `json:"values"`
	Errors []string `json:"errors"`
}

var out = outcome{Values: []string{}, Errors: []string{}}
var mu sync.Mutex

func value(v int) {
	mu.Lock()
	out.Values = append(out.Values, strconv.Itoa(v))
	mu.Unlock()
}

func failed(err error) {
	var pgErr *pgconn.PgError
	mu.Lock()
	defer mu.Unlock()
	if errors.As(err, &pgErr) {
		out.Errors = append(out.Errors, pgErr.Code)
	} else {
		out.Errors = append(out.Errors, "client: "+err.Error())
	}
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

func read(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...interface{}) pgx.Row
}, id int) {
	var v int
	if err := q.QueryRow(ctx, "SELECT v FROM pgx_items WHERE id = $1", id).Scan(&v); err != nil {
		failed(err)
		return
	}
	value(v)
}

func main() {
	ctx := context.Background()
	dsn := os.Getenv("PGRELAY_TEST_DSN")
	switch os.Args[1] {
	case "read-transactions":
		// five transactions that only read, three reads each
		conn, err := pgx.Connect(ctx, dsn)
		must(err)
		defer conn.Close(ctx)
		for i := 0; i < 5; i++ {
			tx, err := conn.Begin(ctx)
			must(err)
			for id := 1; id <= 3; id++ {
				read(ctx, tx, id)
			}
			must(tx.Commit(ctx))
		}
	case "pool-reads":
		// pgxpool, eight goroutines, autocommit reads and read-only transactions
		pool, err := pgxpool.Connect(ctx, dsn)
		must(err)
		defer pool.Close()
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < 10; i++ {
					read(ctx, pool, 1+(g+i)%3)
					tx, err := pool.Begin(ctx)
					must(err)
					read(ctx, tx, 1+(g+i)%3)
					must(tx.Commit(ctx))
				}
			}(g)
		}
		wg.Wait()
	case "batch":
		// a batch outside and inside a transaction: three reads under one Sync
		conn, err := pgx.Connect(ctx, dsn)
		must(err)
		defer conn.Close(ctx)
		for round := 0; round < 2; round++ {
			var tx pgx.Tx
			if round == 1 {
				tx, err = conn.Begin(ctx)
				must(err)
			}
			batch := &pgx.Batch{}
			for id := 1; id <= 3; id++ {
				batch.Queue("SELECT v FROM pgx_items WHERE id = $1", id)
			}
			var results pgx.BatchResults
			if tx != nil {
				results = tx.SendBatch(ctx, batch)
			} else {
				results = conn.SendBatch(ctx, batch)
			}
			for id := 1; id <= 3; id++ {
				var v int
				if err := results.QueryRow().Scan(&v); err != nil {
					failed(err)
				} else {
					value(v)
				}
			}
			must(results.Close())
			if tx != nil {
				must(tx.Commit(ctx))
			}
		}
	case "read-then-write":
		// a transaction reads, then writes: it moves to the primary and commits
		conn, err := pgx.Connect(ctx, dsn)
		must(err)
		defer conn.Close(ctx)
		tx, err := conn.Begin(ctx)
		must(err)
		read(ctx, tx, 5)
		if _, err := tx.Exec(ctx, "UPDATE pgx_items SET v = v + 1 WHERE id = $1", 5); err != nil {
			failed(err)
		}
		read(ctx, tx, 5)
		if err := tx.Commit(ctx); err != nil {
			failed(err)
		}
	case "write-then-read":
		// autocommit: the read right after the client's own write sees it
		conn, err := pgx.Connect(ctx, dsn)
		must(err)
		defer conn.Close(ctx)
		for i := 0; i < 5; i++ {
			if _, err := conn.Exec(ctx, "UPDATE pgx_items SET v = v + 1 WHERE id = $1", 6); err != nil {
				failed(err)
			}
			read(ctx, conn, 6)
		}
	case "error-in-transaction":
		// an error aborts the transaction; after the rollback the connection serves on
		conn, err := pgx.Connect(ctx, dsn)
		must(err)
		defer conn.Close(ctx)
		tx, err := conn.Begin(ctx)
		must(err)
		read(ctx, tx, 7)
		var v int
		if err := tx.QueryRow(ctx, "SELECT v / 0 FROM pgx_items WHERE id = $1", 7).Scan(&v); err != nil {
			failed(err)
		}
		read(ctx, tx, 7)
		must(tx.Rollback(ctx))
		read(ctx, conn, 7)
	case "cache-rotation":
		// a statement cache of two: pgx deallocates the statement it evicts (DEALLOCATE name)
		config, err := pgx.ParseConfig(dsn + "&statement_cache_capacity=2")
		must(err)
		conn, err := pgx.ConnectConfig(ctx, config)
		must(err)
		defer conn.Close(ctx)
		for round := 0; round < 3; round++ {
			for k := 0; k < 4; k++ {
				var v int
				if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT v + %d FROM pgx_items WHERE id = $1", k), 8).Scan(&v); err != nil {
					failed(err)
				} else {
					value(v)
				}
			}
		}
	default:
		must(fmt.Errorf("no scenario %q", os.Args[1]))
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
}
