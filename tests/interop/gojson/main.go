// Command gojson writes the Go backend's canonical form of PCS signature subsets.
//
// It reads JSONL on stdin, one signature subset per line, and writes one line per input line:
// the four float fields rounded as math.Round(x*1e9)/1e9, then json.Marshal of a struct with
// the upstream backend's field names, json tags and declaration order (encoding/json writes a
// struct's fields in declaration order, not sorted; HTML-escaped strings, shortest float
// digits). A line that cannot be encoded gives {"error": "..."}.
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

// signedSubset is the backend's signature payload: these fields, in this order, with these tags.
type signedSubset struct {
	Budget     float64 `json:"budget"`
	CohStar    float64 `json:"coh_star"`
	DHat       float64 `json:"D_hat"`
	Epoch      int64   `json:"epoch"`
	MerkleRoot string  `json:"merkle_root"`
	PCSID      string  `json:"pcs_id"`
	R          float64 `json:"r"`
	ShardID    string  `json:"shard_id"`
}

func str(in map[string]interface{}, k string) (string, error) {
	s, ok := in[k].(string)
	if !ok {
		return "", fmt.Errorf("%s is not a string", k)
	}
	return s, nil
}

func rounded(in map[string]interface{}, k string) (float64, error) {
	n, ok := in[k].(json.Number)
	if !ok {
		return 0, fmt.Errorf("%s is not a number", k)
	}
	x, err := n.Float64()
	if err != nil {
		return 0, err
	}
	return math.Round(x*1e9) / 1e9, nil
}

func canonical(line []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var in map[string]interface{}
	if err := dec.Decode(&in); err != nil {
		return nil, err
	}
	var out signedSubset
	var err error
	if out.PCSID, err = str(in, "pcs_id"); err != nil {
		return nil, err
	}
	if out.MerkleRoot, err = str(in, "merkle_root"); err != nil {
		return nil, err
	}
	if out.ShardID, err = str(in, "shard_id"); err != nil {
		return nil, err
	}
	n, ok := in["epoch"].(json.Number)
	if !ok {
		return nil, fmt.Errorf("epoch is not a number")
	}
	if out.Epoch, err = n.Int64(); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		key string
		dst *float64
	}{{"D_hat", &out.DHat}, {"coh_star", &out.CohStar}, {"r", &out.R}, {"budget", &out.Budget}} {
		if *f.dst, err = rounded(in, f.key); err != nil {
			return nil, err
		}
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
