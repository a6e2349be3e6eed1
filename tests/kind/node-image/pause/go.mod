module mycel.test/pause

go 1.22
