// The console's only script of its own: copy buttons, select-all, a confirm before DDL runs, and
// uPlot charts from the JSON the server rendered into the page.
document.addEventListener("click", (ev) => {
  const copy = ev.target.closest("[data-copy]");
  if (copy) {
    const text = document.getElementById(copy.dataset.copy).textContent;
    navigator.clipboard.writeText(text).then(() => { copy.textContent = "Copied"; });
  }
  const all = ev.target.closest("[data-select-all]");
  if (all) {
    document.querySelectorAll(`input[name="${all.dataset.selectAll}"]`).forEach((b) => { b.checked = all.checked; });
  }
});

document.addEventListener("submit", (ev) => {
  const msg = ev.target.dataset && ev.target.dataset.confirm;
  if (msg && !window.confirm(msg)) ev.preventDefault();
});

function drawCharts() {
  const data = document.getElementById("series");
  if (!data || typeof uPlot === "undefined") return;
  const series = JSON.parse(data.textContent);
  document.querySelectorAll(".chart[data-series]").forEach((el) => {
    const cols = series[el.dataset.series];
    if (!cols || cols[0].length < 1) { el.textContent = "no history"; return; }
    if (el.dataset.kind === "lag") {
      new uPlot({
        width: Math.min(640, el.parentElement.clientWidth || 640), height: 160, legend: {show: false},
        series: [{}, {label: "lag s", stroke: "#b42318", fill: "rgba(180,35,24,.1)"}],
        axes: [{}, {label: "s", size: 50}],
      }, [cols[0], cols[1]], el);
      return;
    }
    new uPlot({
      width: 220, height: 60, legend: {show: false}, cursor: {show: false},
      axes: [{show: false}, {show: false}],
      series: [{}, {label: "total ms", stroke: "#2563eb", fill: "rgba(37,99,235,.15)"}],
    }, [cols[0], cols[1]], el);
  });
}
window.addEventListener("load", drawCharts);
