package metrics

import "github.com/prometheus/client_golang/prometheus"

// statsCollector turns a component's counters into metrics when Prometheus
// scrapes: it reads them once per scrape through stats, so the component
// counts as it always does and pays nothing between scrapes.
type statsCollector[S any] struct {
	// stats reads the component's counters.
	stats func() S
	// descs are the metrics' descriptions by name; the series of one name
	// share one, as the registry requires.
	descs map[string]*prometheus.Desc
	// series are what each scrape reports from one reading.
	series []statSeries[S]
}

// statSeries is one series a statsCollector reports.
type statSeries[S any] struct {
	// desc names the metric; kind says counter or gauge.
	desc *prometheus.Desc
	kind prometheus.ValueType
	// labels are the series' label values, in desc's order.
	labels []string
	// value picks the series' value from a reading.
	value func(S) float64
}

// counter adds a counter without labels.
func (c *statsCollector[S]) counter(name, help string, value func(S) float64) {
	c.add(name, help, prometheus.CounterValue, "", "", value)
}

// gauge adds a gauge without labels.
func (c *statsCollector[S]) gauge(name, help string, value func(S) float64) {
	c.add(name, help, prometheus.GaugeValue, "", "", value)
}

// gaugeLabel adds the series of a gauge where label is val.
func (c *statsCollector[S]) gaugeLabel(name, help, label, val string, value func(S) float64) {
	c.add(name, help, prometheus.GaugeValue, label, val, value)
}

// add adds a series; label "" means none.
func (c *statsCollector[S]) add(name, help string, kind prometheus.ValueType, label, val string, value func(S) float64) {
	var names, vals []string
	if label != "" {
		names, vals = []string{label}, []string{val}
	}
	if c.descs == nil {
		c.descs = map[string]*prometheus.Desc{}
	}
	desc, ok := c.descs[name]
	if !ok {
		desc = prometheus.NewDesc(name, help, names, nil)
		c.descs[name] = desc
	}
	c.series = append(c.series, statSeries[S]{desc: desc, kind: kind, labels: vals, value: value})
}

// Describe implements prometheus.Collector.
func (c *statsCollector[S]) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *statsCollector[S]) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for _, m := range c.series {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(s), m.labels...)
	}
}
