// Command gojson writes the Go backend's canonical form of PCS signature subsets.
//
// It reads JSONL on stdin, one signature subset per line, and writes one line per input line:
// the four float fields rounded as math.Round(x*1e9)/1e9, then json.Marshal of a
// map[string]interface{} (keys sorted, HTML-escaped strings, shortest float digits), exactly
// as the upstream backend does. A line that cannot be encoded gives {"error": "..."}.
// Standard library only; used by tests/interop/test_go_interop.py.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
)

var floatFields = []string{"D_hat", "coh_star", "r", "budget"}

func canonical(line []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var in map[string]interface{}
	if err := dec.Decode(&in); err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	for _, k := range []string{"pcs_id", "merkle_root", "shard_id"} {
		s, ok := in[k].(string)
		if !ok {
			return nil, fmt.Errorf("%s is not a string", k)
		}
		out[k] = s
	}
	n, ok := in["epoch"].(json.Number)
	if !ok {
		return nil, fmt.Errorf("epoch is not a number")
	}
	epoch, err := n.Int64()
	if err != nil {
		return nil, err
	}
	out["epoch"] = epoch
	for _, k := range floatFields {
		n, ok := in[k].(json.Number)
		if !ok {
			return nil, fmt.Errorf("%s is not a number", k)
		}
		x, err := n.Float64()
		if err != nil {
			return nil, err
		}
		out[k] = math.Round(x*1e9) / 1e9
	}
	return json.Marshal(out)
}

func main() {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for sc.Scan() {
		b, err := canonical(sc.Bytes())
		if err != nil {
			b, _ = json.Marshal(map[string]string{"error": err.Error()})
		}
		w.Write(b)
		w.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
