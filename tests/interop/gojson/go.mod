module sigops.test/gojson

go 1.22
