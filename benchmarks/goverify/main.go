// Command goverify is the upstream Go backend's HMAC verify path, rebuilt for the benchmarks:
// per record, json.Unmarshal into a PCS struct, the four signed floats rounded as
// math.Round(x*1e9)/1e9, json.Marshal of the signed-subset struct (the backend's field order:
// encoding/json keeps declaration order), HMAC-SHA256, base64 decode of sig, hmac.Equal.
//
// Usage: goverify [-wal] SECRET FILE
// FILE is JSONL (one PCS per line) or, with -wal, an inbox WAL (<time>|<length>|<body>\n).
// Prints {"total": N, "valid": M}. Standard library only.
package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
)

// pcs is the record as the backend decodes it: every field of the upstream agent's PCS.
type pcs struct {
	PCSID      string          `json:"pcs_id"`
	Schema     string          `json:"schema"`
	Version    string          `json:"version"`
	ShardID    string          `json:"shard_id"`
	Epoch      int64           `json:"epoch"`
	Attempt    int             `json:"attempt"`
	SentAt     string          `json:"sent_at"`
	Seed       int64           `json:"seed"`
	Scales     []int           `json:"scales"`
	NJ         map[string]int  `json:"N_j"`
	CohStar    float64         `json:"coh_star"`
	VStar      []float64       `json:"v_star"`
	DHat       float64         `json:"D_hat"`
	R          float64         `json:"r"`
	Regime     string          `json:"regime"`
	Budget     float64         `json:"budget"`
	MerkleRoot string          `json:"merkle_root"`
	Sig        string          `json:"sig"`
	FT         json.RawMessage `json:"ft"`
}

// signedSubset is what the backend signs: these fields, in this order.
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

func round9(x float64) float64 { return math.Round(x*1e9) / 1e9 }

func verify(body []byte, key []byte) bool {
	var p pcs
	if err := json.Unmarshal(body, &p); err != nil {
		return false
	}
	msg, err := json.Marshal(signedSubset{round9(p.Budget), round9(p.CohStar), round9(p.DHat),
		p.Epoch, p.MerkleRoot, p.PCSID, round9(p.R), p.ShardID})
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(msg)
	sig, err := base64.StdEncoding.DecodeString(p.Sig)
	if err != nil {
		return false
	}
	return hmac.Equal(mac.Sum(nil), sig)
}

func main() {
	args := os.Args[1:]
	wal := len(args) > 0 && args[0] == "-wal"
	if wal {
		args = args[1:]
	}
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: goverify [-wal] SECRET FILE")
		os.Exit(2)
	}
	key := []byte(args[0])
	f, err := os.Open(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	total, valid := 0, 0
	for {
		var body []byte
		if wal {
			// <time>|<length>|<body>\n: the length delimits the body.
			if _, err := r.ReadSlice('|'); err != nil {
				break
			}
			n, err := r.ReadSlice('|')
			if err != nil {
				break
			}
			size, err := strconv.Atoi(string(n[:len(n)-1]))
			if err != nil {
				break
			}
			body = make([]byte, size+1)
			if _, err := readFull(r, body); err != nil {
				break
			}
			body = body[:size]
		} else {
			line, err := r.ReadBytes('\n')
			if len(bytes.TrimSpace(line)) == 0 {
				if err != nil {
					break
				}
				continue
			}
			body = line
		}
		total++
		if verify(body, key) {
			valid++
		}
	}
	fmt.Printf("{\"total\": %d, \"valid\": %d}\n", total, valid)
}

func readFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			if n == len(b) {
				return n, nil
			}
			return n, err
		}
	}
	return n, nil
}
