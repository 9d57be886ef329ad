// Command river-bench is River's side of bench/throughput.py's peer comparison: River's own
// migrations, bulk insertion of no-op jobs, and one client draining them with the setup of
// `river bench` (one queue, MaxWorkers 2,000, FetchCooldown 2 ms, FetchPollInterval 20 ms,
// InsertMany in batches of 5,000).
//
//	river-bench migrate          River's migrations, up, on the database
//	river-bench insert -n N      N no-op jobs with InsertMany, 5,000 per call
//	river-bench work -n N        start one client; exit once N jobs have been worked
//
// The database is -database-url, else $BENCH_PEER_DSN. Each mode ends with one line on
// stdout that bench/throughput.py reads, e.g.
//
//	RIVER drained=20000 seconds=1.234567 rate=16200.0 startup=0.012345
//
// `work` measures as `river bench` does: from the moment client.Start returns to the last
// job completion River reports to a subscriber (a completion is reported once it is stored).
// startup is the time from the program's start to then (connecting, building the client).
// River's own log lines (warnings and errors only) go to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// The setup of `river bench` (cmd/river/riverbench in River's repository).
const (
	insertBatchSize   = 5_000
	maxWorkers        = 2_000
	fetchCooldown     = 2 * time.Millisecond
	fetchPollInterval = 20 * time.Millisecond
)

const dsnVariable = "BENCH_PEER_DSN"

var processStart = time.Now()

// NoopArgs are the arguments of the benchmark's job: a sequence number, as in `river bench`.
type NoopArgs struct {
	Num int `json:"num"`
}

// Kind is the job kind River stores in river_job.kind.
func (NoopArgs) Kind() string { return "bench_noop" }

// NoopWorker does nothing and succeeds.
type NoopWorker struct {
	river.WorkerDefaults[NoopArgs]
}

// Work returns at once.
func (*NoopWorker) Work(context.Context, *river.Job[NoopArgs]) error { return nil }

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	mode, args := os.Args[1], os.Args[2:]
	flags := flag.NewFlagSet("river-bench "+mode, flag.ExitOnError)
	databaseURL := flags.String("database-url", os.Getenv(dsnVariable), "PostgreSQL URL (default $"+dsnVariable+")")
	n := flags.Int("n", 0, "number of jobs (insert, work)")
	timeout := flags.Duration("timeout", 15*time.Minute, "give up after this long")
	_ = flags.Parse(args) // ExitOnError: exits on a bad flag

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var run func(context.Context, *pgxpool.Pool, int) error
	switch mode {
	case "migrate":
		run = migrate
	case "insert":
		run = insert
	case "work":
		run = work
	default:
		usage()
	}
	if mode != "migrate" && *n < 1 {
		fail(errors.New("-n must be at least 1"))
	}
	if *databaseURL == "" {
		fail(errors.New("no database: give -database-url or set $" + dsnVariable))
	}
	// A default pool, as `river bench` opens it (pgxpool: max(4, CPUs) connections).
	pool, err := pgxpool.New(ctx, *databaseURL)
	if err != nil {
		fail(err)
	}
	defer pool.Close()
	if err := run(ctx, pool, *n); err != nil {
		fail(err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: river-bench migrate|insert|work [-n N] [-database-url URL] [-timeout D]")
	os.Exit(2)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "river-bench:", err)
	os.Exit(1)
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// migrate applies River's own migrations (the main line), as `river migrate-up` would.
func migrate(ctx context.Context, pool *pgxpool.Pool, _ int) error {
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: logger()})
	if err != nil {
		return err
	}
	result, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	last := 0
	for _, v := range result.Versions {
		last = max(last, v.Version)
	}
	fmt.Printf("RIVER migrated=%d version=%d\n", len(result.Versions), last)
	return nil
}

func newClient(pool *pgxpool.Pool, queues map[string]river.QueueConfig) (*river.Client[pgx.Tx], error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, &NoopWorker{})
	return river.NewClient(riverpgxv5.New(pool), &river.Config{
		FetchCooldown:     fetchCooldown,
		FetchPollInterval: fetchPollInterval,
		Logger:            logger(),
		Queues:            queues,
		Workers:           workers,
	})
}

// insert stores n jobs with InsertMany, insertBatchSize per call (one transaction each).
func insert(ctx context.Context, pool *pgxpool.Pool, n int) error {
	client, err := newClient(pool, nil) // an insert-only client
	if err != nil {
		return err
	}
	batch := make([]river.InsertManyParams, 0, insertBatchSize)
	started := time.Now()
	for num := 1; num <= n; num++ {
		batch = append(batch, river.InsertManyParams{Args: NoopArgs{Num: num}})
		if len(batch) == insertBatchSize || num == n {
			if _, err := client.InsertMany(ctx, batch); err != nil {
				return fmt.Errorf("inserting: %w", err)
			}
			batch = batch[:0]
		}
	}
	seconds := time.Since(started).Seconds()
	fmt.Printf("RIVER inserted=%d seconds=%.6f rate=%.1f\n", n, seconds, float64(n)/seconds)
	return nil
}

// work starts one client on the default queue and returns once n jobs have been worked.
func work(ctx context.Context, pool *pgxpool.Pool, n int) error {
	client, err := newClient(pool, map[string]river.QueueConfig{
		river.QueueDefault: {MaxWorkers: maxWorkers},
	})
	if err != nil {
		return err
	}
	// Completions are counted from River's event stream, as `river bench` counts them: an
	// event comes once the completion is stored. A channel that holds every event drops none.
	events, unsubscribe := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: n,
		Kinds: []river.EventKind{
			river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled,
		},
	})
	defer unsubscribe()

	if err := client.Start(ctx); err != nil {
		return fmt.Errorf("starting the client: %w", err)
	}
	started := time.Now()
	var (
		worked, failed int
		last           time.Time
	)
	for worked < n {
		select {
		case <-ctx.Done():
			_ = client.StopAndCancel(context.Background())
			return fmt.Errorf("%d of %d jobs worked: %w", worked, n, ctx.Err())
		case event := <-events:
			if event == nil {
				return fmt.Errorf("event stream closed after %d of %d jobs", worked, n)
			}
			if event.Kind != river.EventKindJobCompleted {
				failed++
			}
			worked++
			last = time.Now()
		}
	}
	seconds := last.Sub(started).Seconds()
	startup := started.Sub(processStart).Seconds()
	stopCtx, stopCancel := context.WithTimeout(context.Background(), time.Minute)
	defer stopCancel()
	if err := client.Stop(stopCtx); err != nil {
		return fmt.Errorf("stopping the client: %w", err)
	}
	fmt.Printf("RIVER drained=%d seconds=%.6f rate=%.1f startup=%.6f failed=%d\n",
		worked, seconds, float64(worked)/seconds, startup, failed)
	if failed > 0 {
		return fmt.Errorf("%d jobs did not complete", failed)
	}
	return nil
}
