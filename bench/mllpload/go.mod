module carescore/bench/mllpload

go 1.22
