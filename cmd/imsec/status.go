package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/observe"
)

func init() {
	register(command{
		name:  "status",
		short: "show what a running P-CSCF, UE, HSS or tunnel holds (its --metrics listener's /status)",
		run:   runStatus,
	})
}

const statusSynopsis = `status --addr ADDR [--json]

Asks a running 'imsec pcscf', 'ue', 'hss' or 'tunnel' started with
--metrics ADDR for its state (GET /status) and prints it as a table: at a
P-CSCF every registration (IMPI, IMPU, inner address, the address ESP goes
to after NAT, expiry) and under it each SA set (state, algorithms, and each
SA's SPI, direction and traffic), then each tunnel's totals and drops.
--json prints the JSON as served.

Example:
  imsec pcscf --domain a.example --db hss.db --metrics 9090 &
  imsec status --addr 9090`

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", statusSynopsis, stderr)
	addr := fs.String("addr", "", "the --metrics address of the process: PORT or :PORT (127.0.0.1) or HOST:PORT (required)")
	asJSON := fs.Bool("json", false, "print the JSON as served instead of a table")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *addr == "" {
		return usageErrorf("--addr is required (the --metrics address of the running process)")
	}
	a, err := observe.ListenAddr(*addr)
	if err != nil {
		return usageErrorf("--addr %v", err)
	}
	if *timeout <= 0 {
		return usageErrorf("--timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a+"/status", nil)
	if err != nil {
		return err
	}
	// One request: no idle connection (and its goroutines) left behind.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w (is the process running with --metrics %s?)", a, err, *addr)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", a, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/status: %s", a, res.Status)
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var st observe.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("%s/status: not imsec's status JSON: %v", a, err)
	}
	printStatus(stdout, st, time.Now())
	return nil
}

// printStatus writes st as tables; now makes expiry relative.
func printStatus(w io.Writer, st observe.Status, now time.Time) {
	registered := 0
	for _, r := range st.Registrations {
		if r.Registered {
			registered++
		}
	}
	fmt.Fprintf(w, "%s %s at %s: %d registrations (%d registered)\n", st.Role, st.Name, st.Time.Format(time.RFC3339), len(st.Registrations), registered)
	if len(st.Registrations) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "IMPU\tIMPI\tSTATE\tINNER\tNAT ADDRESS\tEXPIRES")
		for _, r := range st.Registrations {
			state := "pending"
			if r.Registered {
				state = "registered"
			}
			inner, natAddr, exp := "-", "-", "-"
			if r.Inner.IsValid() {
				inner = r.Inner.String()
			}
			if r.NATAddress.IsValid() {
				natAddr = r.NATAddress.String()
				if r.NAT {
					natAddr += " (NAT)"
				}
			}
			if !r.Expires.IsZero() {
				exp = "in " + r.Expires.Sub(now).Round(time.Second).String()
				if r.Expires.Before(now) {
					exp = "expired"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.IMPU, orDash(r.IMPI), state, inner, natAddr, exp)
		}
		tw.Flush()
		fmt.Fprintln(w, "SA sets:")
		for _, r := range st.Registrations {
			for _, s := range r.Sets {
				var sas []string
				for _, sa := range s.SAs {
					sas = append(sas, fmt.Sprintf("%s %#08x %d pkts %d B", sa.Direction, uint32(sa.SPI), sa.Packets, sa.Bytes))
				}
				id := ""
				if s.ID != 0 {
					id = fmt.Sprintf(" %d", s.ID)
				}
				fmt.Fprintf(w, "  %s: set%s %s %s: %s\n", r.IMPU, id, s.State, s.Suite, strings.Join(sas, ", "))
			}
		}
	}
	for _, t := range st.Tunnels {
		c := t.Counters
		fmt.Fprintf(w, "tunnel %s: ESP in %d packets (%d B), out %d packets (%d B); keepalives %d sent, %d received; NAT rebindings %d; drops: %s\n",
			t.Name, c.RxPackets, c.RxBytes, c.TxPackets, c.TxBytes, c.KeepalivesSent, c.KeepalivesReceived, c.EndpointMoves, drops(c.Drops, map[string]uint64{
				"no_route": c.NoRoute, "no_sa": c.NoSA, "spoofed": c.Spoofed, "device_not_ip": c.NotIP, "invalid": c.Invalid}))
		for _, sa := range t.SAs {
			dir := "out"
			if sa.Inbound {
				dir = "in"
			}
			fmt.Fprintf(w, "  SA %s %#08x: %d packets, %d B, sequence %d\n", dir, uint32(sa.SPI), sa.Packets, sa.Bytes, sa.Sequence)
		}
	}
	if d := st.Diameter; d != nil {
		fmt.Fprintf(w, "diameter: %d connections; MAR %d, UAR %d, SAR %d, LIR %d; refused: user unknown %d, auth rejected %d, failed %d\n",
			d.Connections, d.MAR, d.UAR, d.SAR, d.LIR, d.UserUnknown, d.AuthRejected, d.Failed)
	}
}

// drops lists the non-zero counters of both maps, by name.
func drops(a, b map[string]uint64) string {
	var out []string
	for _, m := range []map[string]uint64{a, b} {
		for k, v := range m {
			if v != 0 && k != esp.ReasonNone.String() {
				out = append(out, fmt.Sprintf("%s %d", k, v))
			}
		}
	}
	sort.Strings(out)
	return joinOrNone(out)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
